"""Batched inference with calibrated per-label scores.

Long texts are windowed (max over windows) instead of silently truncated. Inputs are sorted by length and batched so a
batch carries little padding. Backends: torch (fp32) and ONNX Runtime (fp32 or int8) when an .onnx file is present.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

import numpy as np

from copilot.classifier.artifacts import THRESHOLDS_FILE, Calibration, ClassifierMeta, read_thresholds
from copilot.errors import ComponentMissing
from copilot.onnx_graph import length_groups, pad, session

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
log = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*")  # also one message per line (chat logs, comments)
# Labels judged on the whole text, never on a short window of a long one (see Classifier._windows).
NARRATIVE_LABELS = frozenset({"self-harm", "self-harm/intent", "self-harm/instructions", "misinformation", "extremism"})


def _report(folder: Path) -> dict:
    import json

    try:
        return dict(json.loads((folder / "onnx_report.json").read_text()))
    except (OSError, ValueError, TypeError) as exc:  # no report, or a damaged one: nothing is vouched for
        if (folder / "onnx_report.json").exists():
            log.warning("ignoring %s: %s", folder / "onnx_report.json", exc)
        return {}


def _is_fused(path: Path) -> bool:
    """Whether the graph in this very file has fused attention (not what some report says about the folder)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(n.op_type in ("Attention", "QAttention") for n in graph.node)


def _int8_vetted(folder: Path, model_id: str) -> bool:
    """auto uses the int8 file only when `copilot export-onnx` kept it for these very weights (its report says so)."""
    r = _report(folder)
    if not (folder / "model.int8.onnx").exists() or not r:
        return False
    ok = bool(r.get("keep_int8")) and r.get("model_id", model_id) == model_id
    if not ok:
        log.warning("ignoring %s: onnx_report.json does not vouch for it with model %s", folder / "model.int8.onnx", model_id)
    return ok


class Classifier:
    def __init__(self, folder: Path, thresholds_file: Path | None = None, threads: int = 2, backend: str = "auto",
                 long_window: int = 64, max_batch_tokens: int = 1024) -> None:
        if not (folder / "labels.json").exists():
            raise ComponentMissing(f"classifier: no trained model at {folder} (run `copilot train`)")
        from transformers import AutoTokenizer

        self.folder = folder
        self.meta = ClassifierMeta.read(folder)
        self.labels = self.meta.labels
        self.calibration = Calibration.read(folder, self.labels)
        self.thresholds = read_thresholds(thresholds_file or folder / THRESHOLDS_FILE, self.labels)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        import copy

        self._fast = copy.deepcopy(self.tokenizer.backend_tokenizer)  # own copy: its truncation/padding state is ours
        self._fast.no_truncation()
        self._fast.no_padding()
        self._cls_id, self._sep_id, self._pad_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.tokenizer.pad_token_id
        self.max_len = self.meta.max_len
        self.long_window = long_window
        self.max_batch_tokens = max_batch_tokens
        self.threads = threads
        onnx_path = folder / "model.int8.onnx"
        if backend == "onnx" or (backend == "auto" and _int8_vetted(folder, self.meta.model_id)):
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
        if not path.exists():
            raise ComponentMissing(f"classifier: no ONNX model at {path} (run `copilot export-onnx`)")
        self.session = session(path, self.threads)
        self.onnx_inputs = {i.name for i in self.session.get_inputs()}
        self.backend = "onnx-" + ("int8" if "int8" in path.name else "fp32") + ("-fused" if _is_fused(path) else "")

    # ------------------------------------------------------------------------------------------------------------
    def _windows(self, texts: list[str]) -> tuple[list[list[int]], list[int], list[bool]]:
        """Token ids per window, the index of the text each came from, and whether it is a short (local) window.

        A text that fits in max_len is one window. A longer one gets full-length windows overlapping by half and, when
        `long_window` is set, short windows that start at sentence starts. Why both: the model was trained on short
        posts, so a short threat inside a long harmless transcript drowns in a full-length window, and even in a short
        one that begins mid-chatter (0.09), but not in one that begins with it; while a long post about self-harm reads
        as such only as a whole (short windows cost self-harm 0.03 dev AUPRC). Short windows therefore speak only for
        labels outside NARRATIVE_LABELS. The last full-length window ends at the text's end.
        """
        enc = self._ids(texts)
        cls_id, sep_id = self._cls_id, self._sep_id
        windows, owner, local = [], [], []
        full = self.max_len - 2

        def add(i: int, ids: list[int], starts: list[int], body: int, is_local: bool) -> None:
            if len(ids) > body and not is_local:
                starts = [s for s in starts if s + body <= len(ids)] + [len(ids) - body]
            # a local window may run short at the end: it then reads the text's last sentences and nothing before them
            for start in dict.fromkeys(starts):
                windows.append([cls_id, *ids[start : start + body], sep_id])
                owner.append(i)
                local.append(is_local)

        for i, ids in enumerate(enc):
            add(i, ids, list(range(0, max(1, len(ids) - full), full // 2)), full, False)
            if len(ids) > full and 0 < self.long_window < self.max_len:
                sent_ids, starts, last = self._sentences(texts[i]), [], -(10**9)
                body = self.long_window - 2
                ids = [t for sent in sent_ids for t in sent]
                pos = 0
                for sent in sent_ids:
                    # each sentence start, and every half window inside a long one (ASR transcripts often have no
                    # punctuation at all); starts at least a quarter window apart bound the count
                    for start in range(pos, pos + max(1, len(sent) - body // 2), body // 2):
                        if start - last >= body // 4:
                            starts.append(start)
                            last = start
                    pos += len(sent)
                add(i, ids, starts, body, True)
        return windows, owner, local

    def _ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids without special tokens, untruncated: the Rust tokenizer directly (the transformers wrapper costs
        ~0.1 ms a call, a twentieth of a short case's forward pass)."""
        return [e.ids for e in self._fast.encode_batch(texts, add_special_tokens=False)]

    def _sentences(self, text: str) -> list[list[int]]:
        return self._ids([p for p in _SENTENCE_END.split(text) if p.strip()])

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        windows, owner, local = self._windows(texts)
        out = np.zeros((len(windows), len(self.labels)), dtype=np.float32)
        with self._lock:
            for idx in length_groups([len(w) for w in windows], batch_size, self.max_batch_tokens):
                out[idx] = self._forward(*pad([windows[i] for i in idx], self._pad_id))
        if len(windows) == len(texts):  # every text fit in one window (the usual case): out is the answer
            return out
        local_mask = np.asarray(local)
        if local_mask.any():  # short windows do not speak for narrative labels
            narrative = [k for k, l in enumerate(self.labels) if l in NARRATIVE_LABELS]
            out[np.ix_(local_mask, np.asarray(narrative, dtype=np.intp))] = -np.inf
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
