"""``quantviz search MODEL``: mixed precision under a budget, with the Pareto front."""
from __future__ import annotations

from .cmd_sensitivity import CANDIDATES_HELP, candidates_arg, parse_bits
from .common import (CLIError, ProgressBar, add_common_args, add_model_args, add_scale_args, apply_scale_args, fmt_bytes,
                     fmt_metric, note_calibration_data, note_format_layers, open_session, print_json, table)


def register(sub) -> None:
    p = sub.add_parser("search", help="choose a bit-width per layer under a size or accuracy budget")
    add_model_args(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--avg-bits", type=float, metavar="X", help="average bits per weight over all quantizable weights, scales included "
                                                                         "(as evaluate and the size count them)")
    g.add_argument("--size-bytes", type=int, metavar="N", help="model size in bytes (with scale overhead)")
    g.add_argument("--max-drop", type=float, metavar="D",
                   help="largest acceptable drop of the metric: accuracy / top1_agreement as a fraction (0.01 = 1 point), "
                        "perplexity / kl_div as a rise in their own units (e.g. 0.5 perplexity)")
    p.add_argument("--bits", metavar="B,B",
                   help="candidate weight bit-widths, nothing else (default: 2,3,4,6,8 and the per-group grids "
                        "int4g32, int3g32 and GPTQ candidates int4+gptq, int4g32+gptq, int3g32+gptq where they apply "
                        "to the model)")
    p.add_argument("--candidates", metavar="C,C", help=CANDIDATES_HELP)
    p.add_argument("--steps", type=int, default=9, metavar="N", help="budgets along the Pareto front (default 9)")
    p.add_argument("--metric", metavar="NAME",
                   help="metric --max-drop and the Pareto front use, e.g. accuracy, perplexity, kl_div (default: the model's main metric)")
    p.add_argument("--sensitivity", default="e2e", metavar="METHOD",
                   help="what ranks the layers before the candidates are measured: e2e (one evaluation per layer "
                        "and bit-width), local (each layer's own output SQNR, one calibration pass: for large "
                        "models) or hessian (HAWQ); as quantviz sensitivity --method; a cached result is reused "
                        "(default e2e)")
    p.add_argument("--measure", choices=("less", "all"), default="less",
                   help="less: screen the candidates within the budget on a quarter of the evaluation samples and "
                        "measure end to end only those the screen cannot rule out (at most 3); all: measure every "
                        "candidate end to end, the exhaustive search (default less)")
    p.add_argument("--out", metavar="CFG.json", help="write the chosen config (quantviz config format)")
    add_scale_args(p)
    add_common_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io.config import QuantConfig, save_config

    from ..session.analysis import SEARCH_SENSITIVITY

    if args.sensitivity not in SEARCH_SENSITIVITY:
        raise CLIError(f"--sensitivity: unknown method {args.sensitivity!r} (choose from {', '.join(SEARCH_SENSITIVITY)})")
    bits = candidates_arg(args) or (parse_bits(args.bits, "--bits", required=True) if args.bits is not None else None)
    if args.steps < 2:
        raise CLIError(f"--steps must be at least 2, got {args.steps}")
    if args.size_bytes is not None and args.size_bytes <= 0:
        raise CLIError(f"--size-bytes must be positive, got {args.size_bytes}")
    if args.max_drop is not None and args.max_drop < 0:
        raise CLIError(f"--max-drop must not be negative, got {args.max_drop}")
    session = open_session(args)
    apply_scale_args(session, args)
    if bits is None:
        bits = session.default_search_candidates()
    note_format_layers(session, bits)
    note_calibration_data(session)
    bar = ProgressBar(True if args.progress else None)
    try:
        res = session.run_search(avg_bits=args.avg_bits, size_bytes=args.size_bytes, max_drop=args.max_drop,
                     bits=bits, pareto_steps=args.steps, progress=bar, metric=args.metric,
                                 sensitivity=args.sensitivity, measure=args.measure)
    finally:
        bar.close()
    if args.out:
        save_config(QuantConfig.from_dict(res["chosen"]["config"]), args.out)
    if args.json:
        print_json(res)
        return 0
    metric = res["metric"]
    c = res["chosen"]
    ranked = res.get("sensitivity", "e2e") + (" sensitivity, from the score cache" if res.get("sensitivity_from_cache")
                                              else " sensitivity")
    from ..core.analysis.candidates import as_json

    print(f"{session.name}: settings tried: {', '.join(map(str, as_json(res['bits'])))}")
    print(f"{session.name}: layers ranked by {ranked}; {counts_line(res)}")
    split = session.split
    where = (f"on {split.eval_samples} held-out samples (calibrated on {split.calib_samples} others)" if split.held_out
             else f"on {split.eval_samples} samples, the calibration data" if split.on_calibration_data
             else f"on {split.eval_samples} evaluation samples (calibrated on {split.calib_samples} separate ones)")
    print(f"{session.name}: chosen config {fmt_bytes(c['size_bytes'])}, {c['avg_bits']:.2f} bits/weight, "
          f"{metric} {fmt_metric(metric, c['metrics'].get(metric))}, SQNR {fmt_metric('sqnr_db', c['metrics'].get('sqnr_db'))} "
          f"{where}")
    print(table([[n, str(b)] for n, b in c["bits"].items()], ["layer", "bits" if all(isinstance(b, int) for b in c["bits"].values()) else "setting"], "lr"))
    print("\nPareto front (measured):")
    fmts = any("formats" in q for q in res["pareto"])
    rows = [[fmt_bytes(q["size_bytes"]), f"{q['avg_bits']:.2f}",
             fmt_metric(metric, q["metrics"].get(metric)) + ("*" if q.get("samples") else ""), fmt_metric("sqnr_db", q["metrics"].get("sqnr_db"))]
            + ([q["name"].split(": ", 1)[-1]] if fmts else []) for q in res["pareto"]]
    print(table(rows, ["size", "bits/weight", metric, "SQNR"]
                + (["settings"] if fmts else []), "rrrr" + ("l" if fmts else "")))
    if any(q.get("samples") for q in res["pareto"]):
        print(f"* screened on {res.get('screen_samples')} of the {res.get('eval_samples')} evaluation samples, "
              "not measured end to end")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def counts_line(res: dict) -> str:
    """How many candidates a search proposed, screened and measured end to end."""
    n, full = res["candidates"], res.get("full_evaluations", res["candidates"])
    if res.get("measure", "all") == "all":
        return f"{n} candidates, all {full} measured end to end"
    return (f"{n} candidates, {res.get('screened', 0)} screened on {res.get('screen_samples')} of "
            f"{res.get('eval_samples')} samples, {full} measured end to end")
