"""A quantviz recipe: a Python file that builds your model and its data.

Open it with ``quantviz path/to/recipe.py`` (CLI) or File > Open (app). Copy
this file and replace the bodies with your own code. This template is itself a
working recipe: a tiny random MLP on random data (fixed seed), labelled by the
float model itself, so float accuracy is 100 % and quantization shows as a drop.

The contract
------------
``build_model() -> torch.nn.Module``  (required)
    Build the model and load its weights, e.g.::

        model = MyNet()
        model.load_state_dict(torch.load("weights.pt", weights_only=True))
        return model

    quantviz calls ``model.eval()`` afterwards.

``calibration_data()`` and ``evaluation_data()``  (optional)
    Each returns one of

    * a ``quantviz.core.model.data.Dataset``,
    * a tuple ``(x, y)`` or ``(x,)``,
    * a dict ``{"x": x, "y": y}`` (``y`` optional),

    where ``x`` is a tensor / numpy array with the sample axis first (or a dict
    of them, passed to the model as keyword arguments) and ``y`` holds one
    label per sample. If only ``evaluation_data`` exists, it is split:
    calibration uses its first samples (at most 512, at most half) and the
    figures come from the rest (held out). Without either, give data with ``--data`` / in the app.
    Keep them small: hundreds to a few thousand samples.

``evaluate(model, dataset) -> dict[str, float]``  (optional)
    Your own metrics, computed on the (fake-)quantized model. Higher is better
    unless the name ends in ``loss``, ``perplexity``, ``error`` or ``mse``.
    Iterate with ``for x, y in dataset.batches(64)``.

``training_data()``  (optional)
    Training samples for quantization-aware training (``quantviz qat``), in the
    same forms as above. Without it, QAT trains on the calibration data (or
    ``--train D``).

``loss(model_output, batch) -> scalar tensor``  (optional)
    The training loss for QAT; ``batch`` is ``(x, y)``. Without it QAT uses
    cross-entropy with labels, else distillation from the float model.

``NAME``  (optional str)
    The name shown for the model (default: the file name).

``TASK``  (optional str)
    What the model's main output is: ``"causal_lm"`` (next-token logits of a
    language model; inputs a dict with ``input_ids`` and ``attention_mask``:
    perplexity and KL divergence are measured over the real tokens),
    ``"logits"`` (class logits) or ``"hidden"`` (hidden states / embeddings).

``OUTPUT``  (optional)
    The output the metrics read, when it is not the model's main one (by
    default: the tensor the model returns, else its ``logits`` entry or
    attribute, else its first tensor). A key or attribute name
    (``OUTPUT = "scores"``), an index into a tuple / dict of outputs
    (``OUTPUT = 1``), or a function ``output -> Tensor`` with the batch axis
    first (``OUTPUT = lambda out: out["heads"]["lm"]``).

``MASK``  (optional)
    Which tokens are real, when padding is not marked by an ``attention_mask``
    input (the default). An input's name (``MASK = "pad_mask"``) or a function
    ``inputs -> Tensor`` of shape ``(batch, tokens)``, non-zero / True for a
    real token (``MASK = lambda inputs: inputs["input_ids"] != PAD_ID``). Every
    metric, the calibration statistics, the per-layer algorithms' statistics,
    the sensitivity proxies, the trace and QAT's distillation loss count those
    tokens only (QAT and ``loss()`` also read ``OUTPUT``). A value
    that does not fit the data is a one-line error naming the attribute.

The recipe runs with its own folder importable, so ``from mymodel import
MyNet`` works for a ``mymodel.py`` next to it. Relative file names are not
resolved against the recipe folder: use ``HERE / "weights.pt"`` as below.
Loading can be cancelled at any line of this file.
"""
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
NAME = "tiny-mlp (template)"
SEED = 0
IN_FEATURES = 16
NUM_CLASSES = 4
NUM_SAMPLES = 512


def build_model() -> nn.Module:
    with torch.random.fork_rng():  # fixed weights without touching the caller's RNG
        torch.manual_seed(SEED)
        model = nn.Sequential(
            nn.Linear(IN_FEATURES, 32),
            nn.ReLU(),
            nn.Linear(32, 32),
            nn.ReLU(),
            nn.Linear(32, NUM_CLASSES),
        )
    # A real recipe loads trained weights here:
    # model.load_state_dict(torch.load(HERE / "weights.pt", weights_only=True))
    return model


def _samples(offset: int, n: int):
    gen = torch.Generator().manual_seed(SEED + 1 + offset)
    x = torch.randn(n, IN_FEATURES, generator=gen)
    with torch.no_grad():
        y = build_model()(x).argmax(dim=1)  # labels from the float model
    return x, y


def calibration_data():
    x, _ = _samples(0, 256)
    return (x,)  # calibration needs no labels


def evaluation_data():
    x, y = _samples(1, NUM_SAMPLES)
    return {"x": x, "y": y}


def evaluate(model: nn.Module, dataset) -> dict:
    """Example custom metric: mean probability given to the true class."""
    if not dataset.has_labels:
        return {}
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in dataset.batches(128):
            prob = model(x).softmax(dim=1)
            total += float(prob.gather(1, y[:, None]).sum())
            n += int(y.shape[0])
    return {"true_class_prob": total / max(n, 1)}
