"""``quantviz sensitivity MODEL``: per-layer sensitivity over candidate bit-widths."""
from __future__ import annotations

import json

from .common import (CLIError, ProgressBar, add_common_args, add_scale_args, apply_scale_args, add_model_args, fmt_metric,
                     note_format_layers, open_session, print_json, table, data_note,
                     note_calibration_data)


def parse_bits(text: str | None, flag: str, *, required: bool = False) -> tuple[int, ...] | None:
    """``"2,3,4"`` -> (2, 3, 4); ``"none"`` -> (); None -> None."""
    if text is None:
        return None
    if text.strip().lower() in ("none", ""):
        return ()
    try:
        bits = tuple(sorted({int(t) for t in text.split(",") if t.strip()}))
    except ValueError:
        raise CLIError(f"{flag}: expected comma-separated integers like 2,4,8, got {text!r}") from None
    bad = [b for b in bits if not 2 <= b <= 16]
    if bad:
        raise CLIError(f"{flag}: bit-width {bad[0]} is outside 2..16")
    if required and not bits:
        raise CLIError(f"{flag}: give at least one bit-width")
    return bits


def candidates_arg(args):
    """``--candidates`` parsed (None when not given); bad text is a one-line CLIError."""
    text = getattr(args, "candidates", None)
    if text is None:
        return None
    from ..core.analysis.candidates import CandidateError, parse_candidates

    try:
        return parse_candidates(text)
    except CandidateError as exc:
        raise CLIError(str(exc)) from None


CANDIDATES_HELP = ("weight settings to choose among instead of --bits: bits with optional granularity, range and "
                   "algorithm, or a number format, e.g. int8,int4g32,int3+adaround,int4g32+gptq,mxfp4,nvfp4,fp8 "
                   "(formats: fp8, fp8_e5m2, mxfp8, mxfp8_e5m2, mxfp6, mxfp6_e3m2, mxfp4, mxint8, nvfp4)")


def register(sub) -> None:
    p = sub.add_parser("sensitivity", help="which layers suffer most from quantization (per layer x bit-width)")
    add_model_args(p)
    p.add_argument("--bits", default="2,3,4,6,8", metavar="B,B", help="weight bit-widths to test (default 2,3,4,6,8)")
    p.add_argument("--candidates", metavar="C,C", help=CANDIDATES_HELP)
    p.add_argument("--act-bits", metavar="B,B",
                   help="activation bit-widths to test (default 4,8 when the config quantizes activations; 'none' to skip)")
    p.add_argument("--method", default="e2e", choices=["e2e", "loo", "local", "hessian"],
                   help="e2e: only this layer quantized; loo: all but this layer; local: the layer's own output SQNR; "
                        "hessian: HAWQ trace x weight perturbation (default e2e)")
    p.add_argument("--compare", action="store_true",
                   help="also run e2e and report how well this proxy ranks the layers (Spearman)")
    p.add_argument("--exact", action="store_true",
                   help="local: measure each layer's output noise exactly instead of through a random sketch "
                        "(slower; the sketch is within ~1 dB on average)")
    p.add_argument("--metric", metavar="NAME",
                   help="metric the drops are measured in, e.g. accuracy, perplexity, kl_div, top1_agreement, sqnr_db "
                        "(default: accuracy, else perplexity for a causal LM, else a recipe metric, else fidelity)")
    p.add_argument("--out", metavar="FILE", help="write the JSON result to FILE")
    add_scale_args(p)
    add_common_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io import atomic
    from .common import clean_json

    bits = candidates_arg(args) or parse_bits(args.bits, "--bits", required=True)
    act_bits = parse_bits(args.act_bits, "--act-bits")
    session = open_session(args)
    apply_scale_args(session, args)
    note_format_layers(session, bits)
    note_calibration_data(session)
    bar = ProgressBar(True if args.progress else None)
    try:
        if args.compare and args.method != "e2e":
            session.run_sensitivity("e2e", bits=bits, act_bits=(), progress=bar, metric=args.metric)
        kw = {"sketch": False} if args.exact and args.method == "local" else {}
        res = session.run_sensitivity(args.method, bits=bits, act_bits=act_bits, progress=bar, metric=args.metric, **kw)
        if res.get("from_cache") and not args.json:
            print("(from the score cache; --no-cache measures again)")
    finally:
        bar.close()
    if args.out:
        atomic.write_text(args.out, json.dumps(clean_json(res), indent=1) + "\n")
    if args.json:
        print_json({**res, "data": session.split.to_dict()})
        return 0
    print_table(session, res)
    print(data_note(session))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def drop_words(metric: str | None) -> str:
    """What a drop of ``metric`` is called (positive = worse)."""
    if metric in ("accuracy", "top1_agreement"):
        return f"{metric} drop in points"
    if metric in ("perplexity", "kl_div"):
        return f"{metric} rise (positive = worse)"
    return f"{metric} drop"


def print_table(session, res: dict) -> None:
    method = res["method"]
    metric = res.get("metric")
    keys = [str(b) for b in res["bits"]]
    rows = []
    for e in res["layers"]:
        row = [e["name"], e["type"]]
        for k in keys:
            m = e["results"][k]["metrics"]
            if method == "hessian":
                row.append(f"{m['hessian_score']:.3g}")
            elif method == "local":
                row.append(fmt_metric("sqnr_db", m.get("sqnr_db")))
            else:
                d = e["results"][k].get("drop", {})
                cell = fmt_metric("sqnr_db", m.get("sqnr_db"))
                if metric in d:
                    cell = f"{d[metric] * 100:+.2f} pt / " + cell if metric in ("accuracy", "top1_agreement") else f"{d[metric]:+.3g} / " + cell
                row.append(cell)
        rows.append(row)
    what = {"e2e": f"{drop_words(metric)} / output SQNR, only this layer quantized",
            "loo": f"{drop_words(metric)} / SQNR gain from keeping it float, all others quantized",
            "local": "the layer's own output SQNR (calibration data)",
            "hessian": "mean Hessian trace x ||Q(W) - W||^2"}[method]
    print(f"{session.name}: {method} sensitivity ({what})")
    print(table(rows, ["layer", "type"] + [f"W{k}" if k.isdigit() else k for k in keys], "ll" + "r" * len(keys)))
    sp = res.get("spearman")
    if sp:
        parts = [f"{k} {v:+.2f}" for k, v in sp["mean"].items()]
        print(f"rank agreement with e2e (Spearman, mean over bit-widths): {', '.join(parts) or 'undefined'}")
