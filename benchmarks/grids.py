"""Accuracy and output SQNR of the demo under each symmetric grid rule, next to AIMET's.

    python benchmarks/grids.py [--presets W4,W3]

For each preset and grid rule (``full``, the default; ``torch``, torch's
observers and quantviz's rule before config version 2; ``restricted``) this
evaluates the demo (597 test samples, BatchNorm folded, per-channel min-max
weights) and prints one JSON object (last line). ``aimet`` holds the figures
measured with AIMET 2.42 on the same folded model, data and settings (issue
#11): they are quoted, not recomputed (AIMET is not a dependency).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AIMET_2_42 = {  # accuracy, output SQNR (dB) against the float model, 597 samples
    "W4": {"minmax": [0.9899, 20.4], "adaround_2000": [0.9916, 24.7]},
    "W3": {"minmax": [0.9832, 14.0], "adaround_2000": [0.9883, 18.8]},
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="W4,W3")
    args = ap.parse_args()
    from quantviz.io.config import preset, with_grid
    from quantviz.session import Session

    s = Session.open("demo")
    out: dict = {"model": s.name, "samples": len(s.eval_data), "presets": {}}
    for name in args.presets.split(","):
        row = {}
        for grid in ("full", "torch", "restricted"):
            s.set_config(with_grid(preset(name), grid))
            r = s.check(record=False)
            row[grid] = {"accuracy": r.metrics["accuracy"], "sqnr_db": r.metrics["sqnr_db"],
                         "clipped_max": max(s.layer_row(n)["clipped"] or 0.0 for n in s.layer_names)}
            print(f"{name} {grid:10s} accuracy {100 * r.metrics['accuracy']:.2f} %  SQNR {r.metrics['sqnr_db']:.1f} dB",
                  file=sys.stderr)
        row["aimet_2_42"] = AIMET_2_42.get(name)
        out["presets"][name] = row
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
