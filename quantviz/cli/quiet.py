"""Keep third-party noise off the CLI's stderr (shown again with ``--debug``).

Libraries quantviz loads print warnings at import or load time that say
nothing about the user's model: torchao's "Failed to load ..._C_mxfp8...so",
torch's ``_pytree`` enum deprecations, transformers' advisory messages and
progress bars, Python ``UserWarning`` / ``FutureWarning`` from inside torch.
A CLI run without ``--debug`` silences them, so stderr carries only
quantviz's own progress and messages.
"""
from __future__ import annotations

import logging
import os
import warnings

NOISY_LOGGERS = ("torchao", "torch", "transformers", "onnxscript", "onnx_ir", "onnxruntime", "huggingface_hub")


def quiet_third_party(debug: bool) -> None:
    if debug:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.simplefilter("ignore")
    import torch  # noqa: F401 - torch configures its loggers on import; quiet them afterwards

    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
