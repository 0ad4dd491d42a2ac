"""Accuracy and output SQNR of the demo under each symmetric grid rule, next to AIMET's.

    python benchmarks/grids.py [--presets W8A8,W4,W3,W2] [--out FILE]

For each preset and grid rule (``full``, the default; ``torch``, torch's
observers and quantviz's rule before config version 2; ``restricted``) this
evaluates the demo (597 test samples, BatchNorm folded, per-channel min-max
weights) and prints one JSON object (last line): accuracy, output SQNR, the
largest clipped fraction of any layer's weight, and the model's size under the
preset (``size_bytes``, ``compression``; the same for every grid). ``aimet`` holds the figures
measured with AIMET 2.42 on the same folded model, data and settings (issue
#11): they are quoted, not recomputed (AIMET is not a dependency).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._meta import add_out_argument, finish, meta  # noqa: E402

AIMET_2_42 = {  # accuracy, output SQNR (dB) against the float model, 597 samples
    "W4": {"minmax": [0.9899, 20.4], "adaround_2000": [0.9916, 24.7]},
    "W3": {"minmax": [0.9832, 14.0], "adaround_2000": [0.9883, 18.8]},
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="W8A8,W4,W3,W2")
    add_out_argument(ap)
    args = ap.parse_args()
    started = meta()
    from quantviz.io.config import preset, with_grid
    from quantviz.session import Session

    s = Session.open("demo")
    out: dict = {"model": s.name, "samples": len(s.eval_data), "presets": {}}
    flt = s.check(config=preset("float"), record=False)
    out["float"] = {"accuracy": flt.metrics["accuracy"], "size_bytes": flt.size["float_bytes"]}
    for name in args.presets.split(","):
        row = {}
        for grid in ("full", "torch", "restricted"):
            s.set_config(with_grid(preset(name), grid))
            r = s.check(record=False)
            row[grid] = {"accuracy": r.metrics["accuracy"], "sqnr_db": r.metrics["sqnr_db"],
                         "clipped_max": max(s.layer_row(n)["clipped"] or 0.0 for n in s.layer_names)}
            print(f"{name} {grid:10s} accuracy {100 * r.metrics['accuracy']:.2f} %  SQNR {r.metrics['sqnr_db']:.1f} dB",
                  file=sys.stderr)
        row["size_bytes"], row["compression"] = r.size["quantized_bytes"], r.size["compression"]
        row["aimet_2_42"] = AIMET_2_42.get(name)
        out["presets"][name] = row
    finish(out, args.out, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
