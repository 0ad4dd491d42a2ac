"""No code from a file runs without the user's consent: a scan of every loader call in quantviz.

* ``torch.load`` always passes ``weights_only``; ``weights_only=False`` appears
  once, in the pickled-module loader, behind its ``trust`` check;
* ``numpy.load`` always passes ``allow_pickle=False``;
* ``pickle`` / ``marshal`` / ``dill`` are never used to load;
* transformers' ``trust_remote_code`` is only ever the user's ``trust``.
(The runtime side, a pickle whose unpickling would create a file, is in
test_bad_inputs_cli.py and test_bad_inputs_gui.py.)
"""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "quantviz"


def _calls():
    for path in sorted(PKG.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                yield path, node


def _name(func) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _kw(node: ast.Call, name: str):
    for k in node.keywords:
        if k.arg == name:
            return k.value
    return None


def test_every_loader_call_refuses_code_unless_trusted():
    unsafe_torch = []
    seen = {"torch.load": 0, "np.load": 0}
    for path, node in _calls():
        name = _name(node.func)
        where = f"{path.relative_to(PKG.parent)}:{node.lineno}"
        if name == "torch.load":
            seen[name] += 1
            wo = _kw(node, "weights_only")
            assert wo is not None, f"{where}: torch.load without weights_only"
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                unsafe_torch.append(where)
        elif name in ("np.load", "numpy.load"):
            seen["np.load"] += 1
            ap = _kw(node, "allow_pickle")
            assert isinstance(ap, ast.Constant) and ap.value is False, f"{where}: np.load may unpickle"
        elif name in ("pickle.load", "pickle.loads", "marshal.loads", "dill.load", "dill.loads", "cloudpickle.loads"):
            raise AssertionError(f"{where}: {name} runs code from the data")
        if _kw(node, "trust_remote_code") is not None:
            v = _kw(node, "trust_remote_code")
            assert ast.unparse(v) in ("trust", "bool(trust)"), f"{where}: trust_remote_code not tied to the user's trust"
    assert seen["torch.load"] >= 2 and seen["np.load"] >= 1  # the scan did find the loaders
    assert len(unsafe_torch) == 1 and "torchfiles.py" in unsafe_torch[0], unsafe_torch
    src = (PKG / "core" / "sources" / "torchfiles.py").read_text(encoding="utf-8")
    guarded = src[src.index("if not trust:"):src.rindex("weights_only=False")]
    assert "raise TrustRequired" in guarded  # the one unsafe load sits behind the trust check
