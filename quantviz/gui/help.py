"""The Help menu's content: keyboard shortcuts, a glossary of every metric and
setting, what each export format writes, and where the README is.

The texts are plain data (tested for coverage: every metric quantviz reports,
every range method, granularity and grid has an entry); the dialogs are
non-blocking, like every dialog the app opens.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget

GLOSSARY: dict[str, tuple[str, str]] = {  # key -> (term, explanation)
    # metrics
    "accuracy": ("Accuracy", "Share of evaluation samples whose predicted class equals the label (the task metric, "
                             "when the data has labels). Changes are in percentage points (pt)."),
    "sqnr_db": ("SQNR (dB)", "Signal-to-quantization-noise ratio: 10·log10(Σ f² / Σ (f − q)²) between float values f "
                             "and quantized values q. +6 dB ≈ one more bit; 'identical' means no difference. Shown "
                             "for the model's outputs (Summary) and for each layer's weights and input (W / A SQNR)."),
    "cosine": ("Cosine", "Mean cosine similarity between the quantized and the float outputs, per sample "
                         "(1 = same direction)."),
    "top1_agreement": ("Top-1 agreement", "Share of samples where the quantized model predicts the same class as "
                                          "the float model, whatever the label."),
    "perplexity": ("Perplexity", "For language models: exp of the mean next-token cross-entropy (lower is better)."),
    "kl_div": ("KL divergence", "Kullback–Leibler divergence of the quantized model's output distribution from the "
                                "float model's (0 = identical)."),
    "tensor_mse": ("MSE", "Mean squared error between a tensor's float and quantized values."),
    "clipped": ("Clipped", "Share of a tensor's values outside its grid, which quantization moves to the grid's end."),
    "size": ("Model size", "Bytes to store the model: quantized weights bit-packed plus scales and zero points; "
                           "everything else at its float size. Compression = float size / quantized size."),
    "avg_bits": ("Bits / weight", "Bits per weight of the quantizable layers, scales and zero points included "
                                  "(MXFP4: 4.25), as the model size counts them (a float weight counts 32)."),
    "sensitivity": ("Sensitivity", "How much the model gets worse when a layer is quantized: e2e quantizes only "
                                   "that layer; loo quantizes all but that layer; local is the layer's own output "
                                   "SQNR; hessian is HAWQ's trace × perturbation. The table's column is the drop at "
                                   "the lowest bit-width tried, in the unit its header names."),
    "pareto": ("Pareto front", "Configs for which no other config is both smaller and better; the search traces "
                               "it by solving for several budgets."),
    # settings
    "bits": ("Bits", "Bit-width b of a tensor's grid: 2^b levels. 'float' (null) leaves the tensor unquantized."),
    "per_tensor": ("per-tensor", "One scale (and zero point) for the whole tensor."),
    "per_channel": ("per-channel", "One scale per output channel: each filter gets its own range."),
    "per_group": ("per-group", "One scale per group of group_size consecutive weights within an output channel "
                               "(e.g. 32): finer than per-channel, at the cost of more scales."),
    "symmetric": ("Symmetric / asymmetric", "Symmetric grids are signed with zero point 0; asymmetric grids are "
                                            "[0, 2^b − 1] with a zero point, fitting one-sided ranges (ReLU outputs)."),
    "full": ("Grid: full", "Symmetric grid [−2^(b−1), 2^(b−1) − 1], scale = max(hi/qmax, lo/qmin): both ends of the "
                           "clip range are on the grid, nothing inside it is clipped (the default)."),
    "torch": ("Grid: torch", "The same grid with torch's observer scale max(|lo|, |hi|) / ((qmax − qmin)/2): the top "
                             "of a positive range lies half a step above the last level and is clipped."),
    "restricted": ("Grid: restricted", "Symmetric grid [−(2^(b−1) − 1), 2^(b−1) − 1] (one level fewer), scale = "
                                       "max(|lo|, |hi|) / qmax, as many backends use."),
    "minmax": ("Range: minmax", "The clip range is the tensor's smallest and largest value: nothing clipped, "
                                "but one outlier stretches every step."),
    "percentile": ("Range: percentile", "Clip at the p-th percentile of |values| (default 99.99): a few outliers "
                                        "are clipped so the rest get finer steps."),
    "mse": ("Range: mse", "The clip range that minimises the quantization MSE of the tensor."),
    "kl": ("Range: kl", "Entropy calibration (as TensorRT / ONNX Runtime): the clip range whose quantized "
                        "histogram is closest in KL divergence to the float one."),
    "manual": ("Range: manual", "A clip range [lo, hi] you set by dragging the band or typing it under the plot."),
    "fold_bn": ("Fold BatchNorm", "A BatchNorm right after a conv is folded into the conv's weight and bias before "
                                  "quantizing, as deployment does."),
}

SHORTCUTS = [
    ("Ctrl+O", "Open a model or session"), ("Ctrl+S", "Save the session"), ("Ctrl+Shift+S", "Save the session as…"),
    ("Ctrl+E", "Export the config as JSON"), ("Ctrl+Z", "Undo the last config edit"),
    ("Ctrl+Shift+Z / Ctrl+Y", "Redo"), ("Ctrl+F", "Find a layer (focus the table's filter)"),
    ("F5", "Re-check the current config now"), ("Ctrl+.", "Cancel the running job"),
    ("Ctrl+T", "Trace the error through the layers"),
    ("F1", "This list"), ("Ctrl+Q", "Quit (asks when work is unsaved)"),
    ("Double-click / F2 on a cell", "Edit bits, granularity, grid or range in the table"),
    ("Right-click in the table", "Edit selection: a field for the selection, a type or a pattern; presets"),
]

EXPORT_HELP = {
    "json": ("JSON (config + qparams)", "The config plus every layer's scale, zero point, qmin/qmax, clip range and "
                                        "ONNX tensor names; File › Import config reads it back."),
    "onnx": ("ONNX QDQ model", "An ONNX model (opset 21) with integer weights and Quantize/DequantizeLinear pairs; "
                               "ONNX Runtime runs it."),
    "onnx:tensorrt": ("ONNX QDQ for TensorRT", "An ONNX QDQ model by TensorRT's explicit-quantization rules: signed "
                                               "int8 (int4 weight-only) with zero point 0, Q/DQ on Conv / Gemm / MatMul "
                                               "inputs and residual adds; configs it cannot express are refused."),
    "aimet": ("AIMET encodings", "AIMET 1.0.0 encodings plus the float ONNX model they apply to; Import config "
                                 "reads AIMET encodings back."),
    "torchao": ("torchao model", "A really quantized PyTorch model (torchao quantize_), with a script that applies "
                                 "the same config to your own model."),
    "executorch": ("ExecuTorch program (.pte)", "An ExecuTorch program: 8-bit Conv2d / Linear layers on XNNPACK "
                                                "int8 kernels with the simulated scales (needs ExecuTorch)."),
    "report": ("HTML report", "One self-contained page: model, config, metrics against float, sizes, sensitivity, "
                              "Pareto plot and histograms."),
    "gguf": ("GGUF for llama.cpp", "The model as a GGUF file, each layer in the llama.cpp type the config gives it "
                                   "(Q4_K, Q6_K ...), the rest float; Llama-layout and GPT-2 models."),
    "llama-tensor-types": ("llama-quantize tensor types", "The --tensor-type-file of llama-quantize: one "
                                                          "tensor=type line per quantized tensor."),
    "compressed-tensors": ("compressed-tensors folder (vLLM)", "A Hugging Face folder in the compressed-tensors format "
                                                               "(W4A16 / W8A16 packed, W8A8 int8, FP8 per layer) that "
                                                               "vLLM and transformers load; Hugging Face models only."),
}


def readme_path() -> Path | None:
    """The README next to the package (a source checkout), when there is one."""
    p = Path(__file__).resolve().parents[2] / "README.md"
    return p if p.is_file() else None


def _page(parent: QWidget, name: str, title: str, html: str) -> QDialog:
    dlg = QDialog(parent)
    dlg.setObjectName(name)
    dlg.setWindowTitle(title)
    dlg.resize(720, 560)
    text = QTextBrowser()
    text.setOpenExternalLinks(True)
    text.setHtml(html)
    buttons = QDialogButtonBox(QDialogButtonBox.Close)
    buttons.rejected.connect(dlg.reject)
    lay = QVBoxLayout(dlg)
    lay.addWidget(text, 1)
    lay.addWidget(buttons)
    dlg.setAttribute(Qt.WA_DeleteOnClose)
    dlg.text = text
    dlg.open()
    return dlg


def shortcuts_html() -> str:
    rows = "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in SHORTCUTS)
    return f"<h3>Keyboard shortcuts</h3><table cellpadding=4>{rows}</table>"


def glossary_html() -> str:
    rows = "".join(f"<tr><td valign=top><b>{t}</b></td><td>{d}</td></tr>" for t, d in GLOSSARY.values())
    return f"<h3>Glossary: metrics and settings</h3><table cellpadding=4>{rows}</table>"


def show_shortcuts(win) -> QDialog:
    win._help_dialog = _page(win, "shortcutsDialog", "quantviz — shortcuts", shortcuts_html())
    return win._help_dialog


def show_glossary(win) -> QDialog:
    win._help_dialog = _page(win, "glossaryDialog", "quantviz — glossary", glossary_html())
    return win._help_dialog


def open_readme(win) -> bool:
    p = readme_path()
    if p is None:
        win.show_message("The README is not installed with this copy; see the project's README.md")
        return False
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(p)))
    win.show_message(f"Opened {p}")
    return True


__all__ = ["GLOSSARY", "SHORTCUTS", "EXPORT_HELP", "show_shortcuts", "show_glossary", "open_readme", "readme_path"]
