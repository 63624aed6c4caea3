"""Local GGUF backend: a thin LangChain ``BaseChatModel`` adapter over ``llama_cpp.Llama``.

- Structured output is JSON-schema-constrained decoding: the schema becomes a llama.cpp grammar
  (llama-cpp-python's JSON-schema converter), so the model can only write an object of that shape (enums included),
  compact (no optional whitespace). A string schema with ``"x-substring-of": [texts]`` (our extension) only accepts
  runs of whole words of one of those texts: evidence quotes are then taken from the case by construction.
- KV reuse of the fixed instruction prefix: prompts are ``system`` (fixed for a corpus version) then ``user`` (clauses,
  scores, case last). Before each call the adapter makes sure the KV cache holds the system prefix: either it is still
  live, or a saved state of it is restored (kept in memory, and on disk under ``prefix_cache_dir`` so a fresh process,
  e.g. one CLI call, skips it too), or it is evaluated once and saved. Only the per-case suffix is then evaluated, in
  full: tokens it shares with the previous case are not reused (see ``_prepare_prefix``), except when the prompt goes
  on from the previous call's (a two-turn prompt's second turn). ``prefix_reuse=False`` resets the cache before every
  call (the benchmark's baseline).
- Greedy decoding (temperature 0): the same prompt gives the same answer, whatever was asked before it, which the
  suggestion cache, audits and tests rely on.
  The grammar is applied lazily (as llama.cpp's own common sampler does): the model's top token is checked against
  the grammar alone, and only when the grammar rejects it is the whole vocabulary filtered. Same tokens as filtering
  every step (the greedy pick among allowed tokens is the top token whenever that is allowed), without the ~18 ms a
  full pass over Qwen's 151k-token vocabulary costs per token on these cores (a third of a decode step).
- Forced opening (``prefill_opening``): the text a schema forces before the first free value (``{"reasoning":"``) is
  appended to the prompt and evaluated with it in one batch instead of being decoded token by token; the grammar is
  advanced over it (and must accept it, or the call fails with LLMError rather than llama.cpp aborting). Like
  speculative decoding, evaluating those tokens in the prompt's batch can flip near-tie answers (5 of 10 gold cases
  in an A/B on these cores), deterministically.
- Speculative decoding (``speculative=True``; COPILOT_LLM_SPECULATIVE, off by default: see config.py for why):
  copilot/llm/draft.py proposes the schema-forced and case-copied text, one batched pass verifies up to
  ``max_draft_tokens`` of it and the KV cache is truncated after the first token the model would not have chosen.
  Fewer passes, same deterministic answer for a given prompt and build; it may differ from non-speculative decoding
  on near-ties (batched arithmetic).
- One call at a time per model (a lock): a ``Llama`` object is not thread-safe.
"""

from __future__ import annotations

import codecs
import ctypes
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from pydantic import BaseModel, ConfigDict, PrivateAttr

from copilot.llm.base import ChatBackend, LLMError, LLMTimeout, StructuredResult, parse_json_object
from copilot.llm.draft import JsonDraft

log = logging.getLogger(__name__)

MAX_PREFIX_STATES = 4  # in memory
MAX_PREFIX_FILES = 8  # on disk (each 4 to 40 MB); the oldest go first
_SPACE_RULE = re.compile(r'^space ::= .*$', re.M)
_LOOSE_CHAR = 'char ::= [^"\\\\]'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F]'
_ROLES = {"system": "system", "human": "user", "ai": "assistant", "user": "user", "assistant": "assistant"}


def _role(message: BaseMessage) -> str:
    role = _ROLES.get(message.type)
    if role is None:
        raise LLMError(f"message type {message.type!r} is not supported by the llama.cpp adapter")
    return role


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class LlamaCppChat(BaseChatModel):
    """Chat over a local GGUF file through llama-cpp-python, with constrained decoding and prefix KV reuse."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_path: str
    model_name: str = "local-gguf"
    n_ctx: int = 4096
    n_threads: int = 2  # more threads than free cores makes llama.cpp's spin barriers crawl: size it to the cores it gets
    n_batch: int = 512
    max_tokens: int = 256
    prefix_reuse: bool = True
    prefix_cache_dir: str | None = None
    speculative: bool = False  # schema-drafted speculative decoding (copilot/llm/draft.py) for JSON-constrained calls
    lazy_grammar: bool = True  # False: llama.cpp's sampler filters the whole vocabulary every token (the old decoding)
    prefill_opening: bool = True  # evaluate the schema-forced opening with the prompt (needs lazy_grammar or speculative)
    max_draft_tokens: int = 10

    _llama: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default=None)
    _holder: int | None = PrivateAttr(default=None)  # the thread holding a conversation (see conversation())
    _fmt: Any = PrivateAttr(default=None)
    _fmt_prefix: Any = PrivateAttr(default=None)
    _states: Any = PrivateAttr(default=None)
    _grammars: Any = PrivateAttr(default=None)
    _warmed: Any = PrivateAttr(default=None)
    _state_salt: str = PrivateAttr(default="")
    _last_len: int = PrivateAttr(default=0)  # message tokens of the previous call's prompt (see _prepare_prefix)
    _prefix_alone: int = PrivateAttr(default=0)  # length of the live fixed prefix evaluated or restored alone, else 0

    def model_post_init(self, context: Any, /) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llama = llama_cpp.Llama(
            model_path=self.model_path, n_ctx=self.n_ctx, n_threads=self.n_threads, n_threads_batch=self.n_threads,
            n_batch=self.n_batch, verbose=False,
        )
        template = self._llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise LLMError(f"{self.model_path} has no chat template in its metadata")
        model = self._llama._model
        eos = model.token_get_text(self._llama.token_eos()) if self._llama.token_eos() != -1 else ""
        bos = model.token_get_text(self._llama.token_bos()) if self._llama.token_bos() != -1 else ""
        self._fmt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos, add_generation_prompt=True)
        self._fmt_prefix = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos, add_generation_prompt=False)
        # A plain lock, not an RLock: LangChain's async streaming may resume a generator (and release in its finally)
        # on another thread than the one that acquired. The calls of a held conversation skip it instead (_acquire).
        self._lock = threading.Lock()
        self._states = OrderedDict()
        self._grammars = {}
        self._warmed = set()
        self._state_salt = f"{self.model_name}|{llama_cpp.__version__}|{self.n_ctx}|{self.n_batch}"

    @property
    def _llm_type(self) -> str:
        return "llamacpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "n_ctx": self.n_ctx, "n_threads": self.n_threads}

    # ---- prompt and prefix ------------------------------------------------------------------------------------------
    def _tokenize(self, text: str) -> list[int]:
        return list(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def tokenize_messages(self, messages: list[BaseMessage]) -> tuple[list[int], int]:
        """Prompt tokens and the length of the fixed prefix (the leading system message) within them."""
        msgs = [{"role": _role(m), "content": str(m.content)} for m in messages]
        tokens = self._tokenize(self._fmt(messages=msgs).prompt)
        prefix_len = 0
        if msgs and msgs[0]["role"] == "system" and len(msgs) > 1:
            prefix_tokens = self._tokenize(self._fmt_prefix(messages=msgs[:1]).prompt)
            prefix_len = _common_prefix(prefix_tokens, tokens)
            if prefix_len < len(prefix_tokens):  # a token merged across the boundary: reuse what does match
                log.debug("system prefix tokenises differently inside the prompt (%d of %d match)", prefix_len, len(prefix_tokens))
        return tokens, prefix_len

    def _snapshot(self) -> bytes:
        import llama_cpp

        ctx = self._llama.ctx
        size = llama_cpp.llama_state_get_size(ctx)
        buf = (ctypes.c_uint8 * int(size))()
        n = llama_cpp.llama_state_get_data(ctx, buf, size)
        return bytes(memoryview(buf)[: int(n)])

    def _restore(self, data: bytes, tokens: list[int]) -> None:
        import llama_cpp

        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if llama_cpp.llama_state_set_data(self._llama.ctx, buf, len(data)) != len(data):
            raise LLMError("could not restore the cached prompt prefix state")
        llama = self._llama
        llama.input_ids[: len(tokens)] = tokens
        llama.n_tokens = len(tokens)
        llama._requires_eval = True

    def _state_file(self, key: str) -> Path | None:
        if not self.prefix_cache_dir:
            return None
        return Path(self.prefix_cache_dir) / f"prefix-{key}.kv"

    def _prepare_prefix(self, tokens: list[int], prefix_len: int, n_message_tokens: int | None = None) -> int:
        """Put the fixed prefix into the KV cache; return how many prompt tokens need no evaluation (the cache is cut
        there). ``n_message_tokens``: the prompt's length before any forced opening (default: all of ``tokens``).

        Only two things are reused: the fixed prefix, and the previous call's whole prompt when this one extends it
        (a two-turn prompt's second turn). Never the tokens a new case happens to share with the previous one
        ("Candidate clauses:", a first clause line): where the evaluation of the per-case part starts changes how
        llama.cpp batches it, and that changes the logits enough to flip near-tied greedy choices. With that reuse,
        3 of 8 gold cases got a different answer when the same cases were asked in reverse order (benchmarks/RESULTS.md,
        session 9); without it a case's suggestion does not depend on the request order, and an auditor who reruns it
        gets the same one. It costs re-evaluating the ~5-20 shared tokens; a repair call (the same last user message
        with the errors appended, copilot/llm/render.py) re-evaluates everything after the fixed prefix: the user
        message (~2 s with Qwen on 2 cores), and for a two-turn prompt turn 1, its answer and turn 2.

        The fixed prefix is trusted only when its KV state is the one evaluated (or restored) alone: after a call with
        ``prefix_reuse=False`` the cache holds it as part of a whole prompt's batches, which is not the same arithmetic.
        A two-turn prompt's chain holds the model across its turns (``conversation``), so no other request comes in
        between and the second turn always goes on from the first."""
        llama = self._llama
        if not self.prefix_reuse:
            llama.reset()
            self._prefix_alone = 0
            return 0
        live = _common_prefix(llama._input_ids.tolist(), tokens)
        n_msg = len(tokens) if n_message_tokens is None else n_message_tokens
        if self._last_len and live >= self._last_len and n_msg > self._last_len:  # the previous conversation goes on
            return self._keep(min(live, len(tokens) - 1))
        if prefix_len == 0:
            return self._keep(0)
        if live >= prefix_len and self._prefix_alone == prefix_len:
            return self._keep(prefix_len)
        prefix = tokens[:prefix_len]
        key = hashlib.sha256(self._state_salt.encode() + json.dumps(prefix).encode()).hexdigest()[:20]
        data = self._states.get(key)
        path = self._state_file(key)
        if data is None and path is not None and path.is_file():
            try:
                data = path.read_bytes()
                os.utime(path)  # recently used: pruned last
            except OSError:
                data = None
        if data is not None:
            try:
                self._restore(data, prefix)
                self._remember(key, data)
                self._prefix_alone = prefix_len
                return prefix_len
            except LLMError:
                log.warning("cached prefix state %s unusable; evaluating the prefix again", key)
        llama.reset()
        llama.eval(prefix)
        self._prefix_alone = prefix_len
        data = self._snapshot()
        self._remember(key, data)
        if path is not None:
            _write_atomically(path, data)
            _prune(path.parent, keep=MAX_PREFIX_FILES)
        return 0

    def _keep(self, n: int) -> int:
        """Cut the KV cache after its first ``n`` tokens (what follows is evaluated again)."""
        self._llama.n_tokens = n
        if n < self._prefix_alone:  # e.g. a prompt without a system prefix: what follows is no longer the prefix alone
            self._prefix_alone = 0
        return n

    def _remember(self, key: str, data: bytes) -> None:
        self._states[key] = data
        self._states.move_to_end(key)
        while len(self._states) > MAX_PREFIX_STATES:
            self._states.popitem(last=False)

    def _acquire(self, deadline: float | None) -> bool:
        """Take the model for one call; False (nothing to release) when this thread already holds it in a conversation."""
        if self._holder == threading.get_ident():
            return False
        if not self._lock.acquire(timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic())):
            raise LLMTimeout("timed out waiting for the local model (another request holds it)")
        return True

    @contextmanager
    def conversation(self, deadline: float | None = None) -> Iterator[None]:
        """Hold the model, in this thread, for the calls of one exchange: a two-turn prompt's second turn then goes on
        from the KV state of the first (its prompt and answer) whatever other requests wait, so an answer under load is
        the one given alone, and turn 1 is not evaluated twice (a repair call of the exchange is held too). The waiting
        requests lose nothing: one model computes one call at a time anyway. Inside a conversation, this thread's calls
        (and a nested conversation) do not take the lock again; they must run on this thread."""
        if not self._acquire(deadline):  # already held by this thread: the outer conversation releases it
            yield
            return
        self._holder = threading.get_ident()
        try:
            yield
        finally:
            self._holder = None
            self._lock.release()

    def warm_prefix(self, system_text: str) -> None:
        """Evaluate (or restore) the KV state of a system prompt ahead of the first request."""
        from langchain_core.messages import HumanMessage, SystemMessage

        if system_text in self._warmed:  # cheap after the first time: no waiting for the lock behind a running call
            return
        with self.conversation():
            tokens, prefix_len = self.tokenize_messages([SystemMessage(system_text), HumanMessage("x")])
            self._last_len = 0  # the next request starts a conversation of its own (only the first warm-up per text gets here)
            self._prepare_prefix(tokens, prefix_len)
            self._warmed.add(system_text)

    def _grammar(self, schema: dict[str, Any]) -> Any:
        """The llama.cpp grammar of a JSON schema, properties in schema order, without optional whitespace
        (compact JSON is fewer tokens to generate)."""
        from llama_cpp import LlamaGrammar
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        key = json.dumps(schema)  # not sort_keys: the property order is the generation order (reasoning first)
        grammar = self._grammars.get(key)
        if grammar is None:
            if len(self._grammars) > 64:
                self._grammars.clear()
            plain, substrings = _extract_substring_fields(schema)
            gbnf = _SPACE_RULE.sub('space ::= ""', json_schema_to_gbnf(json.dumps(plain)))
            # llama-cpp-python's converter lets a string hold raw control characters, which JSON forbids: a raw
            # newline in a reasoning makes the answer unparseable and costs a repair call (seen once in session 6's
            # half-A repair reasons). llama.cpp's own converter excludes them; so do we. If a new converter writes
            # the rule differently, decoding goes on with its grammar: the JSON check still catches such an answer.
            if "char ::=" in gbnf:  # a schema without strings has no such rule
                if _LOOSE_CHAR in gbnf:
                    gbnf = gbnf.replace(_LOOSE_CHAR, _STRICT_CHAR)
                elif _STRICT_CHAR not in gbnf:
                    log.warning("JSON string grammar not tightened: llama-cpp-python's converter wrote an unknown char rule")
            for i, texts in enumerate(substrings):
                marker = f'"\\"{_SUBSTR_MARK}{i}\\""'
                if marker not in gbnf:
                    raise LLMError(f"could not place the quote grammar for field {i} (llama-cpp-python's converter changed?)")
                rules = substring_rules(f"quote{i}", texts)
                gbnf = gbnf.replace(marker, f'"\\"" quote{i} "\\""') + "\n" + rules
            grammar = self._grammars[key] = LlamaGrammar.from_string(gbnf, verbose=False)
        return grammar

    # ---- generation ---------------------------------------------------------------------------------------------
    def iter_text(
        self, messages: list[BaseMessage], *, json_schema: dict[str, Any] | None = None, max_tokens: int | None = None,
        deadline: float | None = None, stats: dict[str, Any] | None = None,
    ) -> Generator[str, None, None]:
        """Generate, yielding text as it is decoded; fills ``stats`` with token counts and the first-token time."""
        import llama_cpp

        stats = stats if stats is not None else {}
        t0 = time.perf_counter()
        acquired = self._acquire(deadline)
        gen: Any = None
        try:
            tokens, prefix_len = self.tokenize_messages(messages)
            n_message_tokens = len(tokens)
            prefill = self.prefill_opening and (self.lazy_grammar or self.speculative)
            opening = forced_opening(json_schema) if (json_schema is not None and prefill) else ""
            forced = self._tokenize(opening) if opening else []
            tokens = tokens + forced
            if max_tokens is not None and max_tokens <= 0:
                raise LLMError(f"max_tokens must be positive, not {max_tokens}")
            budget = min(max_tokens if max_tokens is not None else self.max_tokens, self.n_ctx - len(tokens) - 1)
            if budget <= 0:
                raise LLMError(f"prompt of {len(tokens)} tokens does not fit the context of {self.n_ctx}")
            cached = self._prepare_prefix(tokens, prefix_len, n_message_tokens)
            self._last_len = n_message_tokens
            stats.update(prompt_tokens=len(tokens), cached_tokens=cached, completion_tokens=0, finish_reason="stop")
            grammar = self._grammar(json_schema) if json_schema is not None else None
            llama = self._llama
            vocab = llama._model.vocab
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            n = 0
            text: list[str] = []
            draft = JsonDraft(json_schema) if (self.speculative and json_schema is not None) else None
            stats.update(drafted_tokens=0, accepted_tokens=0, passes=0)
            if opening:  # part of the answer's text, though the model did not decode it
                text.append(opening)
                yield opening
            if draft is not None:
                gen = self._speculative(tokens, grammar, draft, text, stats, len(forced))
            elif self.lazy_grammar:
                gen = self._greedy(tokens, grammar, len(forced))
            else:
                gen = llama.generate(tokens, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, grammar=grammar)
            for tok in gen:
                if llama_cpp.llama_vocab_is_eog(vocab, tok):
                    break
                n += 1
                stats["completion_tokens"] = n
                if n == 1:
                    stats["first_token_s"] = time.perf_counter() - t0
                piece = decoder.decode(llama.detokenize([tok]))
                if piece:
                    text.append(piece)
                    yield piece
                if n >= budget:
                    stats["finish_reason"] = "length"
                    break
                if deadline is not None and time.monotonic() > deadline:
                    stats["finish_reason"] = "timeout"
                    raise LLMTimeout(
                        f"generation passed the deadline after {n} tokens (COPILOT_LLM_TIMEOUT_S)",
                        prompt_tokens=len(tokens), completion_tokens=n,
                    )
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
        finally:
            if gen is not None:
                gen.close()  # frees the grammar gate now, under the lock, not whenever this frame is collected
            if acquired:
                self._lock.release()

    def _eval_prompt(self, tokens: list[int]) -> None:
        """Evaluate the prompt past what the KV cache already holds (Llama.eval drops the cache beyond n_tokens first);
        at least one token is evaluated, so the context's last logits are this prompt's."""
        llama = self._llama
        llama.n_tokens = min(_common_prefix(llama._input_ids.tolist(), tokens), len(tokens) - 1)
        llama.eval(tokens[llama.n_tokens:])  # logits of the last position only
        llama._requires_eval = True  # the context's logits will not be this prompt's once decoding starts

    def _greedy(self, tokens: list[int], grammar: Any, n_forced: int) -> Iterator[int]:
        """Greedy decoding, the grammar checked lazily (see the module docstring); the last ``n_forced`` prompt tokens
        are the forced opening, which the grammar is advanced over before the first sampled token."""
        import llama_cpp

        llama = self._llama
        self._eval_prompt(tokens)
        gate = _GrammarGate(llama, grammar) if grammar is not None else None
        n_vocab = llama.n_vocab()
        try:
            if gate is not None:
                for t in tokens[len(tokens) - n_forced:]:
                    gate.accept_forced(t)
            while True:
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama._ctx.ctx, -1), shape=(n_vocab,))
                tok = int(np.argmax(logits))
                if gate is not None:
                    if not gate.allows(tok):
                        tok = gate.best(logits)
                    gate.accept(tok)
                yield tok
                llama.eval([tok])
        finally:
            if gate is not None:
                gate.free()

    def _speculative(
        self, tokens: list[int], grammar: Any, draft: JsonDraft, text: list[str], stats: dict[str, Any], n_forced: int = 0,
    ) -> Iterator[int]:
        """Greedy, grammar-constrained decoding that verifies drafted tokens in one batch (see copilot/llm/draft.py).

        A drafted token is kept only where the model, under the grammar, picks that very token; at the first
        disagreement the model's own token is kept and the rest of the draft is dropped from the KV cache. (A batched
        pass can flip a near-tie that one-token passes would break the other way; the answer stays deterministic.)
        ``text`` is the caller's list of decoded pieces (what the draft continues).
        """
        llama = self._llama
        ctx = llama._ctx
        self._eval_prompt(tokens)
        if n_forced:  # check the opening against the grammar first: accepting a token it rejects aborts llama.cpp
            check = _GrammarGate(llama, grammar)
            try:
                for t in tokens[len(tokens) - n_forced:]:
                    check.accept_forced(t)
            finally:
                check.free()
        sampler = llama._init_sampler(top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, grammar=grammar)
        for t in tokens[len(tokens) - n_forced:]:
            sampler.accept(t)
        tok = sampler.sample(ctx, -1)
        while True:
            yield tok
            proposal = draft.propose("".join(text))  # the caller has appended tok's text by the time we resume
            drafted = self._tokenize(proposal)[: self.max_draft_tokens] if proposal else []
            if llama.n_tokens + 1 + len(drafted) >= self.n_ctx:
                drafted = []
            batch = [tok, *drafted]
            base = llama.n_tokens
            ctx.kv_cache_seq_rm(-1, base, -1)
            llama._batch.set_batch(batch=batch, n_past=base, logits_all=True)
            ctx.decode(llama._batch)
            llama.input_ids[base:base + len(batch)] = batch
            llama.n_tokens = base + len(batch)
            stats["passes"] = stats.get("passes", 0) + 1
            stats["drafted_tokens"] = stats.get("drafted_tokens", 0) + len(drafted)
            for i in range(len(batch)):
                nxt = sampler.sample(ctx, i)
                if i < len(drafted) and nxt == drafted[i]:
                    stats["accepted_tokens"] = stats.get("accepted_tokens", 0) + 1
                    yield nxt  # an end-of-generation token ends the caller's loop, and this generator with it
                    continue
                # the model disagrees (or the draft is used up): keep batch[: i + 1] in the cache, continue from nxt
                llama.n_tokens = base + i + 1
                ctx.kv_cache_seq_rm(-1, llama.n_tokens, -1)
                tok = nxt
                break

    def _usage(self, stats: dict[str, Any]) -> dict[str, Any]:
        p, c = int(stats.get("prompt_tokens", 0)), int(stats.get("completion_tokens", 0))
        return {"input_tokens": p, "output_tokens": c, "total_tokens": p + c, "input_token_details": {"cache_read": int(stats.get("cached_tokens", 0))}}

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        stats: dict[str, Any] = {}
        text = "".join(self.iter_text(messages, stats=stats, **_call_kwargs(kwargs)))
        msg = AIMessage(content=text, usage_metadata=self._usage(stats), response_metadata={"finish_reason": stats.get("finish_reason"), "model_name": self.model_name})  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _stream(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        stats: dict[str, Any] = {}
        for piece in self.iter_text(messages, stats=stats, **_call_kwargs(kwargs)):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=self._usage(stats)))  # type: ignore[arg-type]

    def with_structured_output(self, schema: dict[str, Any] | type, *, include_raw: bool = False, **kwargs: Any) -> Runnable:  # type: ignore[override]
        """JSON-schema-constrained decoding; returns the dict (JSON schema given) or the pydantic object."""
        if isinstance(schema, dict):
            json_schema, validate = schema, (lambda d: d)
        elif isinstance(schema, type) and issubclass(schema, BaseModel):
            json_schema, validate = schema.model_json_schema(), schema.model_validate
        else:
            raise TypeError("schema must be a JSON schema dict or a pydantic model class")
        bound = self.bind(json_schema=json_schema)

        def finish(message: AIMessage) -> Any:
            data, error = parse_json_object(str(message.content))
            parsed: Any = None
            parse_error: Exception | None = None
            if data is None:
                parse_error = LLMError(error or "no JSON object")
            else:
                try:
                    parsed = validate(data)
                except Exception as exc:
                    parse_error = exc
            if include_raw:
                return {"raw": message, "parsed": parsed, "parsing_error": parse_error}
            if parse_error is not None:
                raise parse_error
            return parsed

        return bound | RunnableLambda(finish)


def forced_opening(schema: dict[str, Any]) -> str:
    """The text our compact grammar forces before the first free value: ``{"<first property>":"`` when the first
    property is a required free string (no enum), else ``""`` (nothing to skip safely)."""
    props = schema.get("properties") or {}
    if schema.get("type") != "object" or not props:
        return ""
    name, node = next(iter(props.items()))
    if name not in schema.get("required", []) or node.get("type") != "string" or "enum" in node or "x-substring-of" in node:
        return ""
    return "{" + json.dumps(name) + ':"'


_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])  # llama_token_data


class _GrammarGate:
    """A llama.cpp grammar sampler used as a check: does it allow this token, which allowed token has the best logit,
    and advance it over the chosen token."""

    def __init__(self, llama: Any, grammar: Any) -> None:
        import llama_cpp

        self._lc = llama_cpp
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_view = np.frombuffer(memoryview(self._one), dtype=_TOKEN_DATA)
        self._n = llama.n_vocab()
        self._all: Any = None  # the whole vocabulary, allocated on the first rejected top token
        self._view: np.ndarray | None = None
        self._smpl = llama_cpp.llama_sampler_init_grammar(llama._model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"))
        if not self._smpl:
            raise LLMError("llama.cpp could not build the grammar sampler")

    def _apply(self, data: Any, size: int) -> None:
        arr = self._lc.llama_token_data_array(data=data, size=size, selected=-1, sorted=False)
        self._lc.llama_sampler_apply(self._smpl, ctypes.byref(arr))

    def allows(self, tok: int) -> bool:
        self._one_view[0] = (tok, 0.0, 0.0)
        self._apply(self._one, 1)
        return bool(np.isfinite(self._one_view["logit"][0]))

    def best(self, logits: np.ndarray) -> int:
        if self._view is None:
            self._all = (self._lc.llama_token_data * self._n)()
            self._view = np.frombuffer(memoryview(self._all), dtype=_TOKEN_DATA)
        view = self._view
        view["id"] = np.arange(self._n, dtype=np.int32)  # the sampler may reorder or rewrite entries: refill each time
        view["logit"] = logits
        view["p"] = 0.0
        self._apply(self._all, self._n)
        i = int(np.argmax(view["logit"]))
        if not np.isfinite(view["logit"][i]):
            raise LLMError("the grammar allows no token here")
        return int(view["id"][i])

    def accept_forced(self, tok: int) -> None:
        if not self.allows(tok):
            raise LLMError("the grammar rejects the schema's forced opening (llama-cpp-python's JSON-schema converter changed?)")
        self.accept(tok)

    def accept(self, tok: int) -> None:
        self._lc.llama_sampler_accept(self._smpl, tok)

    def free(self) -> None:
        if self._smpl:
            self._lc.llama_sampler_free(self._smpl)
            self._smpl = None


_SUBSTR_MARK = "__copilot_substring_"
# Quotes are at most this many words; at most this many start words per text are offered (long cases: the first ones).
QUOTE_MAX_WORDS = 10
QUOTE_MAX_STARTS = 400


def _extract_substring_fields(schema: dict[str, Any]) -> tuple[dict[str, Any], list[list[str]]]:
    """Replace string schemas carrying ``x-substring-of`` (a list of texts) by a marker enum the grammar step swaps
    for a rule that only accepts runs of whole words of one of those texts."""
    found: list[list[str]] = []

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "x-substring-of" in node:
                found.append(list(node["x-substring-of"]))
                return {"type": "string", "enum": [f"{_SUBSTR_MARK}{len(found) - 1}"]}
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema), found


def _gbnf_literal(text: str) -> str:
    """A GBNF string literal matching ``text`` as it appears inside a JSON string."""
    body = json.dumps(text, ensure_ascii=False)[1:-1]
    return '"' + body.replace("\\", "\\\\").replace('"', '\\"') + '"'


def substring_rules(name: str, texts: list[str]) -> str:
    """GBNF rules: ``name`` matches 1..QUOTE_MAX_WORDS consecutive whitespace-separated words of one of the texts,
    joined by single spaces (so a constrained model can only quote the case)."""
    alts, rules, n = [], [], 0
    for text in texts:
        words = text.split()
        for i in range(min(len(words), QUOTE_MAX_STARTS)):
            run = words[i:i + QUOTE_MAX_WORDS]
            expr = ""
            for w in reversed(run[1:]):
                expr = f"({_gbnf_literal(' ' + w)} {expr})?" if expr else f"({_gbnf_literal(' ' + w)})?"
            rules.append(f"{name}-{n} ::= {_gbnf_literal(run[0])} {expr}".rstrip())
            alts.append(f"{name}-{n}")
            n += 1
    if not alts:
        return f'{name} ::= "-"'
    return f"{name} ::= " + " | ".join(alts) + "\n" + "\n".join(rules)


def _call_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: kwargs[k] for k in ("json_schema", "max_tokens", "deadline") if k in kwargs}


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only data dir only costs speed
        log.warning("could not save the prefix KV state to %s: %s", path, exc)


def _prune(folder: Path, keep: int) -> None:
    files = sorted(folder.glob("prefix-*.kv"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)


class LlamaCppBackend(ChatBackend):
    """The chains' view of a LlamaCppChat: one constrained call, streamed."""

    def _structured(
        self, messages: list[BaseMessage], schema: dict[str, Any], *, max_tokens: int, deadline: float,
        on_text: Callable[[str], None] | None,
    ) -> StructuredResult:
        chat: LlamaCppChat = self.chat
        stats: dict[str, Any] = {}
        parts: list[str] = []
        # closed on the spot when a consumer's on_text raises: the model is released now, not when the frame is collected
        with closing(chat.iter_text(messages, json_schema=schema, max_tokens=max_tokens, deadline=deadline, stats=stats)) as pieces:
            for piece in pieces:
                parts.append(piece)
                if on_text is not None:
                    on_text(piece)
        raw = "".join(parts)
        data, error = parse_json_object(raw)
        if error and stats.get("finish_reason") == "length":
            error += f" (cut off at the token budget of {max_tokens})"
        return StructuredResult(
            data=data, raw=raw, error=error, prompt_tokens=int(stats.get("prompt_tokens", 0)),
            completion_tokens=int(stats.get("completion_tokens", 0)), cached_tokens=int(stats.get("cached_tokens", 0)),
            first_token_s=stats.get("first_token_s"), passes=int(stats.get("passes") or stats.get("completion_tokens", 0)),
            accepted_draft_tokens=int(stats.get("accepted_tokens", 0)),
        )

    @contextmanager
    def conversation(self, deadline: float | None = None) -> Iterator[None]:
        with self.chat.conversation(deadline):
            yield

    def warm_prefix(self, system_text: str) -> None:
        self.chat.warm_prefix(system_text)
