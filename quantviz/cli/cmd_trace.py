"""``quantviz trace MODEL``: where the quantization error enters, layer by layer."""
from __future__ import annotations

import json
import math

from .common import CLIError, ProgressBar, add_common_args, add_model_args, clean_json, open_session, print_json, table


def register(sub) -> None:
    p = sub.add_parser("trace", help="where the error enters: accumulated vs local SQNR per layer, in execution order")
    add_model_args(p)
    p.add_argument("--samples", type=int, metavar="N", help="trace the first N evaluation samples (default: all)")
    p.add_argument("--out", metavar="FILE", help="write the JSON result to FILE")
    add_common_args(p)
    p.set_defaults(func=run)


def fmt_db(v: float | None) -> str:
    """dB with one decimal; ``float`` for no error at all, ``-`` where it does not apply."""
    if v is None:
        return "-"
    if math.isinf(v) and v > 0:
        return "float"
    return f"{v:.1f}"


def fmt_pct(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 100:.1g}" if 0 < v < 0.0001 else f"{v * 100:.2f}"  # tiny but not zero stays visible


def bits_of(l) -> str:
    w = f"W{l.weight_bits}" if l.weight_bits is not None else "W-"
    return w + (f"A{l.act_bits}" if l.act_bits is not None else "")


def report(session, res) -> dict:
    d = res.to_dict()
    d["model"] = session.name
    d["quantizable_layers"] = len(session.layers)
    return d


def run(args) -> int:
    from ..io import atomic

    if args.samples is not None and args.samples < 1:
        raise CLIError(f"--samples must be at least 1, got {args.samples}")
    session = open_session(args)
    bar = ProgressBar(True if args.progress else None)
    try:
        res = session.run_trace(samples=args.samples, progress=bar)
    finally:
        bar.close()
    res.label = args.preset or args.config or "W8"
    rep = report(session, res)
    if args.out:
        atomic.write_text(args.out, json.dumps(clean_json(rep), indent=1) + "\n")
    if args.json:
        print_json(rep)
        return 0
    drop = res.biggest_drop()
    rows = []
    for i, l in enumerate(res.layers):
        note = "error enters" if i == res.entry else ""
        if l.feeds_output is False:
            note = (note + ", " if note else "") + "does not feed the output"
        if drop is not None and i == drop[0]:
            note = (note + ", " if note else "") + f"biggest drop ({drop[1]:.1f} dB)"
        rows.append([l.name, l.type, bits_of(l), fmt_db(l.accumulated_sqnr_db), fmt_db(l.local_sqnr_db),
                     fmt_db(l.input_accumulated_sqnr_db), fmt_db(l.input_local_sqnr_db), fmt_pct(l.input_clipped_fraction),
                     note])
    if res.output_sqnr_db is not None:  # the last row: the output the metrics read, as the re-check measures it
        rows.append(["model output", "", "", fmt_db(res.output_sqnr_db), "", "", "", "", "the re-check's output SQNR"])
    what = f"{res.samples} samples" + (f", {res.tokens} real tokens" if res.tokens is not None else "")
    print(f"{session.name}: error trace of {res.label} on {res.data} ({what}), layers in execution order")
    print(table(rows, ["layer", "type", "bits", "accum dB", "local dB", "in accum dB", "in local dB", "in clipped %", ""],
                "lllrrrrrl"))
    print("accum: the layer's output in the quantized model vs the float model; local: only this layer quantized, "
          "float input; 'float': identical to the float model; model output: the output the metrics read")
    if res.not_executed:
        print(f"not reached by the data: {', '.join(res.not_executed)}")
    if args.out:
        print(f"wrote {args.out}")
    return 0
