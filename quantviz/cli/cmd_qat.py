"""``quantviz qat MODEL``: quantization-aware training of a config, saved as a session."""
from __future__ import annotations

import math
import sys
import time

from .common import CLIError, ProgressBar, add_common_args, add_model_args, fmt_metric, open_session, print_json, table


def register(sub) -> None:
    p = sub.add_parser("qat", help="fine-tune a config with fake quantization (quantization-aware training)")
    add_model_args(p)
    p.add_argument("--train", metavar="D", help="training data, as --data takes it (default: the model's own training "
                                                  "data, else its calibration data)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, metavar="N", help="optimizer steps (default 300)")
    g.add_argument("--epochs", type=float, metavar="N", help="passes over the training data")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate, cosine-decayed (default 1e-3)")
    p.add_argument("--train-batch", type=int, default=32, metavar="N", help="training batch size (default 32)")
    p.add_argument("--lsq", action="store_true", help="learn the quantizer scales (LSQ) instead of frozen ranges")
    p.add_argument("--loss", choices=["auto", "ce", "kl", "mse"], default="auto",
                   help="auto: the recipe's loss(), else cross-entropy with labels, else distillation from the float "
                        "model (kl for logits, mse otherwise)")
    p.add_argument("--seed", type=int, default=0, help="seed of the batch order (default 0)")
    p.add_argument("--checkpoint", metavar="PATH", help="checkpoint file; an interrupted run with the same settings "
                                                        "resumes from it (default: OUT.ckpt with --out)")
    p.add_argument("--checkpoint-every", type=int, default=50, metavar="N", help="steps between checkpoints (default 50)")
    p.add_argument("--out", metavar="SESSION.qvs", help="save the trained session (weights in a .pt next to it)")
    add_common_args(p)
    p.set_defaults(func=run)


def _steps(args, n_train: int) -> int:
    if args.epochs is not None:
        if not (args.epochs > 0):
            raise CLIError(f"--epochs must be positive, got {args.epochs}")
        return max(1, math.ceil(args.epochs * n_train / args.train_batch))
    steps = 300 if args.steps is None else args.steps
    if steps < 1:
        raise CLIError(f"--steps must be at least 1, got {steps}")
    return steps


def run(args) -> int:
    from ..core import sources
    from ..core.training.qat import QATOptions

    if not (args.lr > 0):
        raise CLIError(f"--lr must be positive, got {args.lr}")
    if args.train_batch < 1:
        raise CLIError(f"--train-batch must be at least 1, got {args.train_batch}")
    if args.checkpoint_every < 1:
        raise CLIError(f"--checkpoint-every must be at least 1, got {args.checkpoint_every}")
    if args.out:
        from ..io.atomic import check_writable

        check_writable(args.out, force=True)  # before training, not after
    t0 = time.perf_counter()
    session = open_session(args)
    train = sources.load_data(args.train, session.bundle) if args.train else None
    if train is not None:
        sources.check_fits(session.bundle, train)
    n_train = len(train if train is not None else session.train_data)
    opt = QATOptions(steps=_steps(args, n_train), lr=args.lr, batch_size=args.train_batch, lsq=args.lsq,
                     loss=args.loss, seed=args.seed, checkpoint_every=args.checkpoint_every)
    ckpt = args.checkpoint or (f"{args.out}.ckpt" if args.out else None)
    bar = ProgressBar(True if args.progress else None)
    try:
        rec = session.run_qat(opt, train=train, checkpoint=ckpt, progress=bar)
    finally:
        bar.close()
    if args.out:
        session.save(args.out)
        if ckpt:
            from pathlib import Path

            Path(ckpt).unlink(missing_ok=True)  # finished: the checkpoint has served
    metric = rec["curves"].get("metric_name") or "sqnr_db"
    report = {"model": session.name, "metric": metric, "float": rec["float"].get(metric),
              "before": rec["before"]["metrics"].get(metric), "after": rec["after"]["metrics"].get(metric),
              "settings": rec["settings"], "loss": rec["loss"], "train": rec["train"],
              "train_samples": rec["train_samples"], "seconds_training": rec["seconds"],
              "seconds_total": time.perf_counter() - t0, "curves": rec["curves"],
              "metrics_before": rec["before"]["metrics"], "metrics_after": rec["after"]["metrics"],
              "out": args.out}
    if args.json:
        print_json(report)
        return 0
    rows = [[metric, fmt_metric(metric, report["float"]), fmt_metric(metric, report["before"]),
             fmt_metric(metric, report["after"])]]
    print(f"{session.name}: QAT {opt.steps} steps, lr {opt.lr:g}, LSQ {'on' if opt.lsq else 'off'}, loss {rec['loss']}, "
          f"{rec['train_samples']} training samples, {rec['seconds']:.1f} s")
    print(table(rows, ["metric", "float", "before QAT", "after QAT"], "lrrr"))
    if args.out:
        print(f"wrote {args.out}", file=sys.stdout)
    return 0
