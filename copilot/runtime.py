"""The loaded components of one process (corpus, index, classifier, LLM, database) and their readiness.

Components load lazily and at most once; `warm_up()` loads them all (the service calls it in a background thread at
start so /readyz answers at once and reports 'loading' until they are in). A component that is missing is reported
with the reason, never replaced by a stand-in.

After the components, `warm_up()` runs the warm-up tasks (WARM_TASKS): with an LLM configured, ``llm_prefix``
evaluates the fixed instruction prefix of the suggestion prompt once (copilot.llm.chain.warm_up) so that the first
full-path request does not pay for it. Tasks are reported in readiness as optional entries: they never gate it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from copilot.config import Settings
from copilot.errors import ComponentMissing, CopilotError

log = logging.getLogger(__name__)

REQUIRED = ("corpus", "index", "classifier", "database")
OPTIONAL = ("llm", "media")
# Work after the components load, reported in readiness as optional entries (never gating it).
WARM_TASKS = ("llm_prefix",)


@dataclass
class ComponentStatus:
    name: str
    status: Literal["ready", "missing", "loading", "not_configured"]
    required: bool
    detail: str = ""
    version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "required": self.required, "detail": self.detail, "version": self.version}


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self._values: dict[str, Any] = {}
        self._errors: dict[str, str] = {}
        self._loading: set[str] = set()
        self._tasks: dict[str, ComponentStatus] = {}

    def _get(self, name: str, factory: Any) -> Any:
        with self._lock:
            if name in self._values:
                return self._values[name]
            self._loading.add(name)
            try:
                t0 = time.perf_counter()
                value = factory()
                log.info("loaded %s in %.2fs", name, time.perf_counter() - t0)
            except CopilotError as exc:
                self._errors[name] = exc.detail
                raise
            except Exception as exc:  # a component that fails to load is reported, not hidden
                self._errors[name] = f"{type(exc).__name__}: {exc}"
                log.exception("failed to load %s", name)
                raise ComponentMissing(f"{name}: {self._errors[name]}") from exc
            finally:
                self._loading.discard(name)
            self._values[name] = value
            self._errors.pop(name, None)
            return value

    # ---- components ---------------------------------------------------------------------------------------------
    @property
    def corpus(self):  # type: ignore[no-untyped-def]
        from copilot.policy import load_corpus

        return self._get("corpus", lambda: load_corpus(self.settings.corpus_dir))

    @property
    def embedder(self):  # type: ignore[no-untyped-def]
        from copilot.retrieval.embedder import embedder_for

        return self._get("embedder", lambda: embedder_for(self.settings))

    @property
    def index(self):  # type: ignore[no-untyped-def]
        from copilot.retrieval.index import PolicyIndex, attach_cascade

        def build():  # type: ignore[no-untyped-def]
            idx, report = PolicyIndex.load_or_build(self.corpus, self.embedder, self.settings.index_dir)
            if report.rebuilt:
                log.info("index built: %d chunks (%d embedded, %d reused) in %.1fs", report.n_chunks, report.n_embedded, report.n_reused, report.seconds)
            cascade = attach_cascade(idx, self.settings)
            if cascade is not None and idx.cascade is not None:
                log.info("cascade: %s ranks queries whose best clause scores below %.3f (index %s in %.1fs)",
                         idx.cascade.manifest.get("embedder_id"), idx.cascade_below, "built" if cascade.rebuilt else "loaded", cascade.seconds)
            for which, ix in (("the embedder", idx), ("the cascade embedder", idx.cascade)):
                trained_on = ix.embedder.finetune.get("corpus_version") if ix is not None else None
                if trained_on and trained_on != self.corpus.version:  # still works; new wording is learnt only by retraining
                    log.warning("%s was fine-tuned on corpus %s, the corpus is now %s: rerun `copilot index finetune-embedder` "
                                "and measure with `copilot eval retrieval`", which, trained_on, self.corpus.version)
            rdir = self.settings.resolved_reranker_dir
            if rdir is not None:
                from copilot.retrieval.rerank import Reranker

                idx.reranker = Reranker(rdir, self.settings.torch_threads)
                idx.rerank_depth = self.settings.rerank_depth
                log.info("reranker %s attached (depth %d)", idx.reranker.model_id, idx.rerank_depth)
            return idx

        return self._get("index", build)

    @property
    def classifier(self):  # type: ignore[no-untyped-def]
        from copilot.classifier.inference import Classifier

        return self._get("classifier", lambda: Classifier(self.settings.classifier_path, self.settings.thresholds_file, self.settings.torch_threads,
                                                          self.settings.classifier_backend, self.settings.long_text_window))

    @property
    def database(self):  # type: ignore[no-untyped-def]
        from copilot.store.db import Database

        return self._get("database", lambda: Database.open(self.settings.db_url))

    @property
    def llm(self):  # type: ignore[no-untyped-def]
        from copilot.llm.backends import load_chat_model

        return self._get("llm", lambda: load_chat_model(self.settings))

    @property
    def media(self):  # type: ignore[no-untyped-def]
        """The speech model, after checking the ffmpeg / Tesseract binaries the media pipeline runs as children."""
        from copilot.media.asr import Transcriber
        from copilot.media.tools import check_tools

        def load():  # type: ignore[no-untyped-def]
            check_tools(ocr=self.settings.media_ocr)
            return Transcriber(self.settings.whisper_path, self.settings.whisper_threads, self.settings.whisper_beam_size,
                               self.settings.whisper_word_times)

        return self._get("media", load)

    def has(self, name: str) -> bool:
        return name in self._values

    def try_get(self, name: str) -> Any | None:
        try:
            return getattr(self, name)
        except CopilotError:
            return None

    def warm_up(self) -> None:
        for name in (*REQUIRED, *OPTIONAL):
            if name == "llm" and self.settings.llm_backend == "none":
                continue
            if name == "media" and not self.settings.media_enabled:
                continue
            self.try_get(name)
        if self.settings.llm_backend != "none":
            self.warm_llm_prefix()

    def warm_llm_prefix(self) -> None:
        """Evaluate (or restore from disk) the KV state of the suggestion prompt's fixed prefix; report how it went.
        Outside the components' lock: a request that needs the model meanwhile waits for the model's own lock only."""
        from copilot.llm.chain import warm_up as warm_prefix  # the chain imports this module

        name = "llm_prefix"
        self._tasks[name] = ComponentStatus(name, "loading", False, "evaluating the fixed prompt prefix")
        t0 = time.perf_counter()
        try:
            warm_prefix(self)
        except Exception as exc:  # the full path still works (it warms the prefix on first use), so report and go on
            detail = exc.detail if isinstance(exc, CopilotError) else f"{type(exc).__name__}: {exc}"
            self._tasks[name] = ComponentStatus(name, "missing", False, f"prefix not warmed: {detail}")
            log.warning("LLM prompt prefix not warmed after %.2fs: %s", time.perf_counter() - t0, detail)
            return
        seconds = time.perf_counter() - t0
        self._tasks[name] = ComponentStatus(name, "ready", False, f"warmed in {seconds:.2f}s", version=_version_of("llm", self._values.get("llm")))
        log.info("warmed the LLM prompt prefix in %.2fs", seconds)

    # ---- readiness ----------------------------------------------------------------------------------------------
    def readiness(self) -> list[ComponentStatus]:
        out = []
        for name in (*REQUIRED, *OPTIONAL):
            required = name in REQUIRED
            if name == "llm" and self.settings.llm_backend == "none":
                out.append(ComponentStatus(name, "not_configured", required, "COPILOT_LLM_BACKEND=none: full path falls back to the fast path"))
            elif name == "media" and not self.settings.media_enabled:
                out.append(ComponentStatus(name, "not_configured", required, "COPILOT_MEDIA_ENABLED=false: video and audio uploads are refused"))
            elif name in self._values:
                out.append(ComponentStatus(name, "ready", required, _detail_of(self._values[name]), version=_version_of(name, self._values[name])))
            elif name in self._errors:
                out.append(ComponentStatus(name, "missing", required, self._errors[name]))
            else:
                out.append(ComponentStatus(name, "loading", required, "not loaded yet"))
        for name in WARM_TASKS:
            if self.settings.llm_backend == "none":
                out.append(ComponentStatus(name, "not_configured", False, "no LLM configured"))
            else:
                out.append(self._tasks.get(name) or ComponentStatus(name, "loading", False, "not warmed yet (after the components load)"))
        return out

    def model_ids(self) -> dict[str, str]:
        ids: dict[str, str] = {}
        for name in ("classifier", "embedder", "llm"):
            if name in self._values:
                ids[name] = _version_of(name, self._values[name]) or name
        cascade = getattr(self._values.get("index"), "cascade", None)
        if cascade is not None:  # it ranks some queries, so it is part of what produced a suggestion
            ids["cascade_embedder"] = f"{cascade.embedder.model_id}<{self._values['index'].cascade_below}"
        return ids


def _detail_of(value: Any) -> str:
    """Which backend a model runs on (e.g. the index's embedder fell back from ONNX to torch, and why)."""
    cascade = ""
    if not isinstance(getattr(value, "backend", None), str) and hasattr(value, "embedder"):
        other = getattr(value, "cascade", None)
        if other is not None:  # say which queries a second embedder ranks, and how many it has so far
            cascade = (f"; cascade {other.manifest.get('embedder_id')} ({_detail_of(other)}) below {value.cascade_below}: "
                       f"{value.cascaded} of {value.dense_searches} dense searches")
        value = value.embedder  # the index: say how its queries are embedded
    backend = getattr(value, "backend", None)
    if not isinstance(backend, str):
        return ""
    problem = getattr(value, "onnx_problem", None)
    trained_on = (getattr(value, "finetune", None) or {}).get("corpus_version")
    return (f"backend {backend}" + (f" (ONNX unavailable: {problem})" if problem else "")
            + (f"; fine-tuned on corpus {trained_on}" if trained_on else "") + cascade)


def _version_of(name: str, value: Any) -> str | None:
    if name == "corpus":
        return str(value.version)
    if name == "index":
        return f"{value.manifest.get('corpus_version')}/{value.manifest.get('embedder_id')}"
    if name in ("classifier", "embedder", "llm", "media"):
        return str(getattr(value, "model_id", type(value).__name__))
    if name == "database":
        return str(getattr(value, "dialect", ""))
    return None
