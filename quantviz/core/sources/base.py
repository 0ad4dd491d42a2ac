"""What every model source produces: a :class:`ModelBundle`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from ..model.data import Dataset

# evaluate_fn(model, dataset) -> {"metric name": float}; higher is better unless
# the name ends in "loss" / "perplexity" / "error".
EvaluateFn = Callable[[nn.Module, Dataset], dict]


@dataclass
class ModelBundle:
    """A loaded model with whatever data and evaluation its source provides.

    ``kind`` is one of ``demo``, ``recipe``, ``torchscript``, ``export``,
    ``pickle``, ``hf``, ``onnx``. ``reference`` is the string the user gave (for
    sessions and recent-file lists). ``calib`` and ``eval`` may be ``None``
    when the source carries no data; then ``--data`` is needed.
    ``load_data`` (optional) turns a data path into a Dataset the model
    understands (the HF source tokenizes text files with its tokenizer).
    """

    model: nn.Module
    name: str
    kind: str
    reference: str
    calib: Dataset | None = None
    eval: Dataset | None = None
    evaluate_fn: EvaluateFn | None = None
    load_data: Callable[[str], Dataset] | None = None
    train: Dataset | None = None  # training data for quantization-aware training
    loss_fn: Callable | None = None  # a recipe's loss(model_output, batch) -> scalar tensor
    meta: dict = field(default_factory=dict)
