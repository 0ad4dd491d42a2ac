"""``quantviz evaluate MODEL``: float vs quantized metrics and sizes."""
from __future__ import annotations

import sys

from .common import (ProgressBar, add_common_args, add_model_args, data_note, fmt_bytes, fmt_metric,
                     note_calibration_data, open_session, print_json, table)


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="float vs quantized metrics and sizes for a config or preset")
    add_model_args(p)
    p.add_argument("--stream", action="store_true", help="print the metric estimate after every batch (stderr, or JSON lines with --json)")
    add_common_args(p)
    p.set_defaults(func=run)


def evaluation_report(session, result) -> dict:
    size = result.size
    return {
        "model": session.name,
        "config": result.config,
        "float": {"metrics": result.float_metrics, "size_bytes": size["float_bytes"]},
        "quantized": {"metrics": result.metrics, "size_bytes": size["quantized_bytes"],
                      "compression": size["compression"], "avg_bits": size["avg_bits"],
                      "element_bits": size["element_bits"]},
        "samples": len(session.eval_data),
        "calibration_samples": len(session.calib_data),
        "data": session.split.to_dict(),  # which samples the figures are on (held out from calibration or not)
        "layers": len(session.layers),
    }


def run(args) -> int:
    import json

    session = open_session(args)
    note_calibration_data(session)
    bar = ProgressBar(True if args.progress else None)

    def on_estimate(snap):
        if not args.stream:
            return
        if args.json:
            from .jsonout import json_stream

            json_stream().write(json.dumps({"estimate": snap}) + "\n")
        else:
            parts = [f"{k} {fmt_metric(k, v)} [{fmt_metric(k, snap['bands'][k][0])}, {fmt_metric(k, snap['bands'][k][1])}]"
                     for k, v in snap["metrics"].items() if k in snap["bands"]]
            print(f"after {snap['samples']} samples: " + "; ".join(parts), file=sys.stderr)

    try:
        res = session.check(label=(args.preset or args.config or "W8") + (f"+{args.algorithm}" if getattr(args, "algorithm", None) else ""), progress=bar, on_estimate=on_estimate)
    finally:
        bar.close()
    rep = evaluation_report(session, res)
    if args.json:
        print_json(rep)
        return 0
    fm, qm = rep["float"]["metrics"], rep["quantized"]["metrics"]
    first = ("accuracy", "perplexity", "top1_agreement", "kl_div", "sqnr_db", "cosine")
    names = [n for n in first if n in qm] + sorted(set(qm) - set(first))
    rows = [[n, fmt_metric(n, fm.get(n)), fmt_metric(n, qm.get(n))] for n in names]
    rows.append(["size", fmt_bytes(rep["float"]["size_bytes"]), fmt_bytes(rep["quantized"]["size_bytes"])])
    fbits = f"{size_bits:.0f}" if (size_bits := res.size.get("float_avg_bits")) else "32"
    rows.append(["avg bits / weight", fbits, f"{rep['quantized']['avg_bits']:.2f}"])
    rows.append(["element bits", fbits, f"{rep['quantized']['element_bits']:.2f}"])
    print(f"{session.name}: {rep['samples']} samples, {rep['layers']} quantizable layers, config {res.label}")
    print(data_note(session))
    print(table(rows, ["metric", "float", "quantized"], "lrr"))
    print(f"compression {rep['quantized']['compression']:.2f}x")
    return 0
