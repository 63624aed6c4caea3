"""Export the classifier to ONNX (fp32) and a dynamically quantised int8 copy, and check what quantisation costs.

    copilot export-onnx   (or call export_onnx(folder, ...))

The graph is exported with eager attention and then fused by ONNX Runtime's transformer optimizer (one Attention op
per layer, embeddings + LayerNorm, SkipLayerNorm, BiasGelu); quantisation turns the fused attention into QAttention.
Why: the stock export spells attention as a dozen small ops whose softmax and batched matmuls stay fp32 and unfused,
which is what held 256-token cases to ~35-45 cases/s; fused, int8 runs them about 1.7-1.8x faster (benchmarks/RESULTS.md).
The int8 model is written as model.int8.onnx; inference picks it up automatically (backend "auto") only when
keep_int8 is true, i.e. when it loses no more than `max_auprc_loss` macro-AUPRC against fp32 on the given texts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from copilot.onnx_graph import fuse, root_logging_untouched

log = logging.getLogger(__name__)


def export_onnx(folder: Path, check_texts: list[str] | None = None, check_y: np.ndarray | None = None, check_mask: np.ndarray | None = None,
                max_auprc_loss: float = 0.005) -> dict:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    # eager attention: the SDPA export is not a pattern the fusion recognises
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32,
                                                               attn_implementation="eager").eval()
    enc = tok(["an example text for tracing the graph"], return_tensors="pt")
    fp32 = folder / "model.onnx"
    raw = folder / "model.onnx.unfused"
    with torch.inference_mode():
        torch.onnx.export(model, (enc["input_ids"], enc["attention_mask"]), str(raw), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}, "logits": {0: "b"}},
                          opset_version=17, dynamo=False)
    try:
        fused = fuse(raw, fp32, model.config.num_attention_heads, model.config.hidden_size, model.config.num_hidden_layers)
    finally:
        raw.unlink(missing_ok=True)
    int8 = folder / "model.int8.onnx.candidate"
    # DefaultTensorType: shape inference cannot type the outputs of the fused com.microsoft ops
    with root_logging_untouched():
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True, extra_options={"DefaultTensorType": 1})
    from copilot.classifier.artifacts import ClassifierMeta

    report: dict = {"model_id": ClassifierMeta.read(folder).model_id, "max_auprc_loss": max_auprc_loss, "fused": fused,
                    "fp32_mb": round(fp32.stat().st_size / 1e6, 1), "int8_mb": round(int8.stat().st_size / 1e6, 1)}
    if check_texts is not None and check_y is not None and check_mask is not None:
        from copilot.classifier.inference import Classifier
        from copilot.classifier.metrics import average_precision

        def macro(c: Classifier, one_by_one: bool = False) -> float:
            p = np.concatenate([c.predict_proba([t]) for t in check_texts]) if one_by_one else c.predict_proba(check_texts)
            vals = [average_precision(check_y[check_mask[:, k] > 0, k], p[check_mask[:, k] > 0, k]) for k in range(p.shape[1])
                    if check_y[check_mask[:, k] > 0, k].sum() > 0]
            return float(np.mean(vals))

        quantised = Classifier(folder, backend="torch")
        quantised._init_onnx(int8)
        # int8 activations are quantised with one scale per tensor, computed on the fly: a text's scores depend a little
        # on what shares its batch. The service scores a case alone or in a micro-batch, so int8 must pass both ways.
        a, b, b1 = macro(Classifier(folder, backend="torch")), macro(quantised), macro(quantised, one_by_one=True)
        worst = min(b, b1)
        report.update({"fp32_macro_auprc": round(a, 4), "int8_macro_auprc": round(b, 4), "int8_single_macro_auprc": round(b1, 4),
                       "loss": round(a - worst, 4), "keep_int8": a - worst <= max_auprc_loss})
    keep = report.get("keep_int8", False)
    if keep:
        int8.replace(folder / "model.int8.onnx")
    else:
        int8.unlink()
    (folder / "onnx_report.json").write_text(json.dumps(report, indent=2))
    return report

