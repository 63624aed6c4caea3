"""Export the classifier to ONNX (fp32) and a dynamically quantised int8 copy, and check what quantisation costs.

    copilot export-onnx   (or call export_onnx(folder, ...))

The int8 model is written as model.int8.onnx; inference picks it up automatically (backend "auto") only when
keep_int8 is true, i.e. when it loses no more than `max_auprc_loss` macro-AUPRC against fp32 on the given texts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def export_onnx(folder: Path, check_texts: list[str] | None = None, check_y: np.ndarray | None = None, check_mask: np.ndarray | None = None,
                max_auprc_loss: float = 0.005) -> dict:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32).eval()
    enc = tok(["an example text for tracing the graph"], return_tensors="pt")
    fp32 = folder / "model.onnx"
    with torch.inference_mode():
        torch.onnx.export(model, (enc["input_ids"], enc["attention_mask"]), str(fp32), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}, "logits": {0: "b"}},
                          opset_version=17, dynamo=False)
    int8 = folder / "model.int8.onnx.candidate"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
    from copilot.classifier.artifacts import ClassifierMeta

    report: dict = {"model_id": ClassifierMeta.read(folder).model_id, "max_auprc_loss": max_auprc_loss,
                    "fp32_mb": round(fp32.stat().st_size / 1e6, 1), "int8_mb": round(int8.stat().st_size / 1e6, 1)}
    if check_texts is not None and check_y is not None and check_mask is not None:
        from copilot.classifier.inference import Classifier
        from copilot.classifier.metrics import average_precision

        def macro(c: Classifier) -> float:
            p = c.predict_proba(check_texts)
            vals = [average_precision(check_y[check_mask[:, k] > 0, k], p[check_mask[:, k] > 0, k]) for k in range(p.shape[1])
                    if check_y[check_mask[:, k] > 0, k].sum() > 0]
            return float(np.mean(vals))

        quantised = Classifier(folder, backend="torch")
        quantised._init_onnx(int8)
        a, b = macro(Classifier(folder, backend="torch")), macro(quantised)
        report.update({"fp32_macro_auprc": round(a, 4), "int8_macro_auprc": round(b, 4), "loss": round(a - b, 4), "keep_int8": a - b <= max_auprc_loss})
    keep = report.get("keep_int8", False)
    if keep:
        int8.replace(folder / "model.int8.onnx")
    else:
        int8.unlink()
    (folder / "onnx_report.json").write_text(json.dumps(report, indent=2))
    return report
