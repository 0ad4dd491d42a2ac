"""``quantviz export MODEL --preset/--config --format F --out PATH``."""
from __future__ import annotations

import sys

from .common import CLIError, ProgressBar, add_common_args, add_model_args, open_session, print_json


def register(sub) -> None:
    from ..io.export import FORMATS
    from ..io.onnx_targets import TARGETS

    p = sub.add_parser("export", help="write the config as quantviz JSON, ONNX QDQ, AIMET encodings, a torchao model or an HTML report")
    add_model_args(p)
    p.add_argument("--format", "-f", required=True, choices=FORMATS, help="what to write")
    p.add_argument("--out", "-o", required=True, metavar="PATH", help="output file (torchao also writes <stem>_torchao.py, aimet <stem>_model.onnx; "
                        "compressed-tensors: an output folder)")
    p.add_argument("--target", default="ort", choices=TARGETS,
                   help="onnx only: the runtime the Q/DQ graph is written for: ort (ONNX Runtime's CPU kernels, "
                        "default), tensorrt (signed int8 / int4 with zero point 0, TensorRT's Q/DQ placement); "
                        "qnn is not implemented")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.add_argument("--sensitivity", metavar="METHOD", action="append", choices=("e2e", "loo", "local", "hessian"),
                   help="report only: run this sensitivity analysis first (e2e, loo, local, hessian; repeatable) so the "
                        "report has the heatmap and ranks layers by it; a result cached in the session is reused")
    add_common_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io import atomic
    from ..io.export import aimet_model_path, torchao_script_path

    # refuse before the (slow) model load when the output exists
    if args.format == "compressed-tensors":  # a folder
        atomic.check_writable_dir(args.out, args.force)
    else:
        atomic.check_writable(args.out, args.force)
    if args.format == "torchao":
        atomic.check_writable(torchao_script_path(args.out), args.force)
    if args.format == "aimet":
        atomic.check_writable(aimet_model_path(args.out), args.force)
    if not (args.config or args.preset):
        raise CLIError("export needs --config CFG or --preset NAME")
    if args.target != "ort" and args.format != "onnx":
        raise CLIError(f"--target {args.target} is for --format onnx")
    if args.target != "ort":
        from ..io.onnx_targets import check_target

        check_target(args.target)  # qnn: refused before the model load
    if args.sensitivity and args.format != "report":
        raise CLIError("--sensitivity is for --format report (the other formats carry no analysis)")
    session = open_session(args)
    bar = ProgressBar(True if args.progress else None)
    try:
        for method in dict.fromkeys(args.sensitivity or ()):  # cached: a repeated method runs once
            session.run_sensitivity(method, progress=bar)
        res = session.export(args.format, args.out, force=args.force, progress=bar, target=args.target)
    finally:
        bar.close()
    if args.json:
        print_json(res.to_dict())
        return 0
    for p in res.paths:
        print(f"wrote {p}")
    for n in res.notes:
        print(f"note: {n}", file=sys.stderr)
    return 0
