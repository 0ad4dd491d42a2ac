"""``quantviz inspect MODEL``: every quantizable layer with its weight statistics."""
from __future__ import annotations

from .common import add_common_args, add_model_args, fmt_bytes, print_json, table


def register(sub) -> None:
    p = sub.add_parser("inspect", help="list the quantizable layers and their weight statistics")
    add_model_args(p, data=False, config=False)
    p.add_argument("--data", metavar="D", help="a data sample (optional): lets a TorchScript file be converted to a "
                   "torch.export graph, so BatchNorm folds as in the source model")
    p.add_argument("--no-fold-bn", action="store_true", help="do not fold BatchNorm into the preceding conv")
    add_common_args(p)
    p.set_defaults(func=run)


def inspect_model(reference: str, *, trust: bool = False, fold_bn: bool = True, device: str = "cpu",
                  data: str | None = None) -> dict:
    from ..core import sources
    from ..core.sim.fakequant import QuantSim
    from ..core.model.size import float_model_bytes

    bundle = sources.load_model(reference, trust=trust)
    if data:
        sources.prepare_for_data(bundle, sources.load_data(data, bundle))
    sim = QuantSim(bundle.model, fold_bn=fold_bn, device=device)
    layers = []
    for l in sim.layers:
        w = sim.float_weight(l.name).float()
        std = float(w.std()) if w.numel() > 1 else 0.0
        amax = float(w.abs().max()) if w.numel() else 0.0
        d = l.to_dict()
        d.update({
            "weight_min": float(w.min()), "weight_max": float(w.max()), "weight_mean": float(w.mean()),
            "weight_std": std, "weight_absmax_over_std": (amax / std) if std > 0 else None,
            "nonfinite": int((~w.isfinite()).sum()),
        })
        layers.append(d)
    out = {
        "model": bundle.name, "kind": bundle.kind, "reference": reference,
        "params": sum(p.numel() for p in sim.float_model.parameters()),
        "float_bytes": float_model_bytes(sim.float_model),
        "folded_batchnorm": [list(p) for p in sim.folded_pairs],
        "layers": layers,
    }
    if bundle.meta.get("note"):
        out["note"] = bundle.meta["note"]
    return out


def run(args) -> int:
    info = inspect_model(args.model, trust=args.trust, fold_bn=not args.no_fold_bn, device=args.device,
                         data=getattr(args, "data", None))
    if args.json:
        print_json(info)
        return 0
    print(f"{info['model']}  ({info['kind']})  {info['params']:,} parameters, {fmt_bytes(info['float_bytes'])} float")
    if info["folded_batchnorm"]:
        print("BatchNorm folded: " + ", ".join(f"{b} -> {c}" for c, b in info["folded_batchnorm"]))
    rows = []
    for l in info["layers"]:
        ratio = l["weight_absmax_over_std"]
        rows.append([l["name"], l["type"], "x".join(map(str, l["weight_shape"])), f"{l['params']:,}",
                     f"{l['weight_min']:.4g}", f"{l['weight_max']:.4g}", f"{l['weight_std']:.4g}",
                     f"{ratio:.1f}" if ratio is not None else "-"])
    print(table(rows, ["layer", "type", "weight shape", "params", "min", "max", "std", "max|w|/std"], "lllrrrrr"))
    if info.get("note"):
        print(f"note: {info['note']}")
    print(f"{len(info['layers'])} quantizable layers")
    return 0
