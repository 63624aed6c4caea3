"""Batched inference with calibrated per-label scores.

Long texts are windowed (max over windows) instead of silently truncated. Inputs are sorted by length and batched so a
batch carries little padding. Backends: torch (fp32) and ONNX Runtime (fp32 or int8) when an .onnx file is present.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from copilot.classifier.artifacts import THRESHOLDS_FILE, Calibration, ClassifierMeta, read_thresholds
from copilot.errors import ComponentMissing

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
log = logging.getLogger(__name__)


class Classifier:
    def __init__(self, folder: Path, thresholds_file: Path | None = None, threads: int = 2, backend: str = "auto") -> None:
        if not (folder / "labels.json").exists():
            raise ComponentMissing(f"classifier: no trained model at {folder} (run `copilot train`)")
        from transformers import AutoTokenizer

        self.folder = folder
        self.meta = ClassifierMeta.read(folder)
        self.labels = self.meta.labels
        self.calibration = Calibration.read(folder, self.labels)
        self.thresholds = read_thresholds(thresholds_file or folder / THRESHOLDS_FILE, self.labels)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.max_len = self.meta.max_len
        self.threads = threads
        onnx_path = folder / "model.int8.onnx"
        if backend == "onnx" or (backend == "auto" and onnx_path.exists()):
            self._init_onnx(onnx_path)
        else:
            self._init_torch()
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return f"{self.meta.model_id}+{self.backend}"

    def _init_torch(self) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        torch.set_num_threads(self.threads)
        self.model = AutoModelForSequenceClassification.from_pretrained(str(self.folder), local_files_only=True, dtype=torch.float32)
        self.model.eval()
        self.backend = "torch-fp32"

    def _init_onnx(self, path: Path) -> None:
        import onnxruntime as ort

        if not path.exists():
            raise ComponentMissing(f"classifier: no ONNX model at {path} (run `copilot train --export-onnx`)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.onnx_inputs = {i.name for i in self.session.get_inputs()}
        self.backend = "onnx-" + ("int8" if "int8" in path.name else "fp32")

    # ------------------------------------------------------------------------------------------------------------
    def _windows(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        """Token ids per window and, for each window, the index of the text it came from."""
        body = self.max_len - 2
        stride = body // 4
        enc = self.tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        windows, owner = [], []
        for i, ids in enumerate(enc):
            start = 0
            while True:
                windows.append([cls_id, *ids[start : start + body], sep_id])
                owner.append(i)
                if start + body >= len(ids):
                    break
                start += body - stride
        return windows, owner

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        windows, owner = self._windows(texts)
        order = np.argsort([len(w) for w in windows], kind="stable")
        out = np.zeros((len(windows), len(self.labels)), dtype=np.float32)
        with self._lock:
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                batch = [windows[i] for i in idx]
                width = max(len(w) for w in batch)
                ids = np.full((len(batch), width), self.tokenizer.pad_token_id, dtype=np.int64)
                mask = np.zeros((len(batch), width), dtype=np.int64)
                for r, w in enumerate(batch):
                    ids[r, : len(w)] = w
                    mask[r, : len(w)] = 1
                out[idx] = self._forward(ids, mask)
        result = np.full((len(texts), len(self.labels)), -np.inf, dtype=np.float32)
        np.maximum.at(result, np.asarray(owner), out)
        return result

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.backend.startswith("onnx"):
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.onnx_inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            return np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)
        import torch

        with torch.inference_mode():
            return self.model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.float().numpy()

    def predict_proba(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Calibrated probabilities, shape (len(texts), len(self.labels))."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self.calibration.apply(self.logits(texts, batch_size))
