"""The full path: one LLM call over the case, the classifier's calibrated scores and the retrieved clauses, checked,
repaired once if needed, then combined with the classifier into a Suggestion.

Flow of ``suggest_full(rt, case, fast)``:
1. cache: a hit on (case hash, corpus version, model ids, prompt version) returns the stored suggestion (no tokens);
2. prompt (copilot/llm/render.py): fixed system prefix, then for at most MAX_PROMPT_AREAS candidate policy areas
   (those of the fast path's labels, of labels scored at or above threshold - margin, then retrieval's first areas) the best
   prohibition and the best allowance for this case (``offered_clauses``: the model chooses between a rule and its
   exception), the scores, the case last; the answer is decoded against a JSON schema whose enums hold only the
   offered clause IDs;
   With a two-turn prompt (COPILOT_LLM_SUGGEST_PROMPT naming one with a ``decide`` section), the first call holds the
   case alone and asks for a short description of it (what streams first: ~60 per-case prompt tokens before the first
   word instead of ~180); the second continues the conversation with the clauses and scores and asks for the whole
   answer, its own reasoning first. The rationale is the description, then that reasoning. A description that repeats
   the prompt or names a clause is left out (a repair of turn 2 could not change it);
3. checks (copilot/llm/checks.py); on errors one repair call names them (appended to the same prompt); an answer
   whose only fault is a reasoning that repeats the prompt is kept with NO_CASE_REASONING as its reasoning; still
   invalid, or any LLM error or timeout
   (COPILOT_LLM_TIMEOUT_S for the whole request; COPILOT_LLM_MAX_TOKENS per call) -> the fast path's suggestion is
   returned with ``fallback_reason`` saying why;
4. ensemble (below).

Ensemble and abstention rule
----------------------------
Notation: for a label L, s(L) is the classifier's calibrated score, t(L) its threshold, m = COPILOT_FAST_PATH_MARGIN;
"supported" means the classifier was trained for L (LabelScore.supported). The LLM's labels are closed under
sub-labels (hate/threatening implies hate). A label has a valid citation when a checked prohibition clause of L's
policy area backs it: the LLM's own for a label the LLM adds, the LLM's or else the fast path's for a flagged label.

The classifier proposes; the LLM can except, confirm or add, and only a checked citation makes a label. For each L:
  - flagged (s(L) >= t(L)), and the LLM cites an allowance of L's area while giving no label of that area: inside
    the uncertain band (s(L) < t(L) + m) L is dropped with a note (the exception applies); if the classifier is
    confident, L is kept and the suggestion abstains (strong disagreement: a human decides);
  - flagged otherwise: kept, whether or not the LLM repeats it (silence is not disagreement), cited by the LLM's
    prohibition of L's area or else the fast path's clause;
  - not flagged, the LLM gives L: kept only with the LLM's own prohibition citation of L's area and, for a label the
    classifier supports, only if L is a base label (a sub-label is a severity call the classifier was trained for)
    and s(L) >= LLM_SUPPORT_FLOOR (the LLM may add a label the classifier sees at least weakly, never one it scores
    near zero). Labels without classifier support (extremism, privacy, misinformation, ...) are retrieval's and the
    LLM's alone.
These choices were tuned on half of the gold set (var/gold-half-b.jsonl, benchmarks/gold_halves.py) and reported on
the other half: see benchmarks/RESULTS.md.
A kept label without any valid citation is not suggested: when no label remains the suggestion abstains ("explain or
abstain"), otherwise a note names it. The suggestion also abstains (action ``escalate``, a human decides) when the
LLM sets abstain or recommends ``escalate``, or the case is not in English (as on the fast path); the labels that
passed are still reported.
Citations: one prohibition per suggested label (a sub-label lends its clause to its base label, and keeps that base
label even where an exception removed it), the exceptions behind an escalation, plus the allowances that explain a
"no": one that removed a flagged label of its area or settled one scored within the margin under its threshold, or,
when no label is suggested at all, any the LLM cited (also on an escalation: the human deciding sees the exception
the model found). Any other cited clause is listed in the notes, not cited.
Action when not abstaining: no label -> ``no_action``; otherwise the LLM's action if it is the default action of one
of the kept prohibitions, else the strictest of those clauses' default actions.

Streaming: ``stream_suggestion`` yields ("rationale", text) events while the first answer is generated, then one
("suggestion", Suggestion) event; ``stream_rationale`` yields only the text and returns the Suggestion as the
generator's return value. The streamed text is the first answer's reasoning (two-turn: the description, then the
second call's reasoning); the Suggestion's ``rationale`` is the
authoritative one (after repair and with the ensemble's notes). Setting the ``cancel`` event (or closing the generator)
stops the chain at the first answer's next token: it falls back (``fallback_reason`` names the cancellation) and the
worker thread ends. Prompt evaluation, a remote call in flight and the repair call cannot be interrupted; the request's
deadline (COPILOT_LLM_TIMEOUT_S) bounds them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from langchain_core.messages import AIMessage

from copilot.errors import CopilotError
from copilot.llm.base import ChatBackend, StructuredResult
from copilot.llm.checks import CLAUSE_ID_RE, ECHO_ERROR, Checked, EchoLines, LLMSuggestion, check_suggestion, echoes, prompt_lines, text_ratio
from copilot.llm.prompts import SUGGEST_PROMPT, load_prompt
from copilot.llm.render import (
    decide_message,
    reasoning_schema,
    suggest_messages,
    suggest_system_text,
    suggestion_schema,
    tidy_cut,
    two_turn,
    unsupported_labels,
    with_repair,
)
from copilot.runtime import Runtime
from copilot.schema import ACTION_SEVERITY, Action, Case, Citation, Clause, LLMBudget, Suggestion
from copilot.suggest import language_reason

log = logging.getLogger(__name__)

# A supported label the classifier scores below this cannot be added by the LLM.
LLM_SUPPORT_FLOOR = 0.1
# Clauses offered to the model: per candidate area its best prohibition and its best allowance, at most this many
# (a title line is about 15 prompt tokens, about 0.15 s of prompt processing on 2 cores).
MAX_PROMPT_AREAS = 3
MAX_PROMPT_CLAUSES = 6
CACHE_SIZE = 512
# The rationale when the model's reasoning only repeated its prompt, even after the repair (its labels and citations
# passed every check and are kept).
NO_CASE_REASONING = ("The model gave no case-specific reasoning (its answer repeated the prompt); its labels and citations passed "
                     "the checks and are combined with the classifier's as usual.")
# Two-turn prompts: the cap of turn 1 (the description alone: at most REASONING_MAX_CHARS characters, ~35 tokens in
# English, but up to about one token a character in other scripts, plus the JSON).
DESCRIBE_CALL_TOKENS = 160
# Two-turn prompts: a turn-2 reasoning this similar to the description (difflib ratio) is not repeated in the rationale.
REPEAT_RATIO = 0.8

OnText = Callable[[str], None]


class StreamCancelled(CopilotError):
    """The consumer of a streamed suggestion went away; raised from the text callback to stop generating."""

    code, title, safe = "stream_cancelled", "Stream cancelled", True


# ---- cache ----------------------------------------------------------------------------------------------------------
class SuggestionCache:
    """In-memory LRU of full-path suggestions, keyed by (case hash, corpus version, model ids, prompt version)."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, ...], Suggestion] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple[str, ...]) -> Suggestion | None:
        with self._lock:
            sug = self._items.get(key)
            if sug is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return sug.model_copy(deep=True)

    def put(self, key: tuple[str, ...], sug: Suggestion) -> None:
        with self._lock:
            self._items[key] = sug.model_copy(deep=True)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_CACHES: weakref.WeakKeyDictionary[Runtime, SuggestionCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def suggestion_cache(rt: Runtime) -> SuggestionCache:
    with _CACHES_LOCK:
        cache = _CACHES.get(rt)
        if cache is None:
            cache = _CACHES[rt] = SuggestionCache()
        return cache


def suggest_echo_lines(prompt_name: str = SUGGEST_PROMPT) -> EchoLines:
    """What a suggestion's reasoning must not repeat: the suggestion prompt's instructions and examples (its label
    list, which is the corpus's wording, left out)."""
    return _echo_lines(prompt_name, load_prompt(prompt_name).version)


@lru_cache(maxsize=4)
def _echo_lines(name: str, version: str) -> EchoLines:  # keyed by the prompt's content hash: an edited prompt gets new lines
    return prompt_lines(load_prompt(name).render("system", labels=""))


def case_hash(case: Case) -> str:
    # language is part of it: the same words declared in another language are escalated, not suggested; so are the
    # media timings: an evidence span's start_s/end_s come from them, and a cached answer must not carry stale times
    payload = case.model_dump_json(include={"content_type", "title", "caption", "transcript", "on_screen_text", "comments", "language",
                                            "transcript_timing", "on_screen_timing"})
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def cache_key(rt: Runtime, case: Case, llm: ChatBackend) -> tuple[str, ...]:
    ids = rt.model_ids()
    models = "|".join([llm.model_id, ids.get("classifier", ""), ids.get("embedder", ""), ids.get("cascade_embedder", "")])
    return (case_hash(case), rt.corpus.version, models, load_prompt(rt.settings.llm_suggest_prompt).version)


# ---- prompt inputs --------------------------------------------------------------------------------------------------
@dataclass
class Offered:
    clauses: list[Clause]
    scores: dict[str, float]  # retrieval score per clause ID


def candidate_areas(rt: Runtime, fast: Suggestion, hits: list[Any]) -> list[str]:
    """The policy areas the model is asked about, most likely first: those of the labels the fast path suggests, then
    those of labels the classifier scores near their threshold, then those retrieval ranks first."""
    taxonomy = rt.corpus.taxonomy
    margin = rt.settings.fast_path_margin
    areas: list[str] = []
    near = sorted((s for s in fast.scores if s.supported and s.threshold is not None and s.score >= s.threshold - margin
                   and s.score >= LLM_SUPPORT_FLOOR), key=lambda s: s.threshold - s.score)  # type: ignore[operator]
    for area in [*(taxonomy.labels[lab].area for lab in fast.labels), *(taxonomy.labels[s.label].area for s in near),
                 *(h.area for h in hits)]:
        if area not in areas:
            areas.append(area)
    return areas[:MAX_PROMPT_AREAS]


def offered_clauses(rt: Runtime, case: Case, fast: Suggestion) -> Offered:
    """Per candidate area, its best-ranked prohibition and its best-ranked allowance for this case (the fast path's
    citation is that area's prohibition when there is one): the model chooses between a rule and its exception."""
    corpus = rt.corpus
    text = case.text()
    qv = rt.index.embedder.encode([text])[0]
    hits = rt.index.search(text, k=rt.settings.retrieval_k, query_vec=qv)
    scores = {h.clause_id: h.score for h in hits}
    fast_prohibitions = [cl for cl in (corpus.get(c.clause_id) for c in fast.citations) if cl.kind == "prohibition"]
    for c in fast.citations:
        if c.score is not None:
            scores.setdefault(c.clause_id, c.score)
    chosen: list[Clause] = []
    for area in candidate_areas(rt, fast, hits):
        ranked = rt.index.search(text, k=12, areas={area}, query_vec=qv)
        for h in ranked:
            scores.setdefault(h.clause_id, h.score)
        prohibition = next((c for c in fast_prohibitions if c.area == area), None)
        if prohibition is None:
            prohibition = next((corpus.get(h.clause_id) for h in ranked if h.kind == "prohibition"), None)
        allowance = next((corpus.get(h.clause_id) for h in ranked if h.kind != "prohibition"), None)
        chosen += [c for c in (prohibition, allowance) if c is not None and c.status == "active" and c not in chosen]
    return Offered(chosen[:MAX_PROMPT_CLAUSES], scores)


def render_prompt(rt: Runtime, case: Case, fast: Suggestion) -> tuple[list[Any], Offered]:
    """The messages sent for this case (what the prompt snapshot test records) and the clauses they offer."""
    offered = offered_clauses(rt, case, fast)
    return suggest_messages(rt.corpus, case, fast.scores, offered.clauses, rt.settings.llm_suggest_prompt), offered


def warm_up(rt: Runtime) -> None:
    """Load the LLM and cache the KV state of the fixed suggestion prefix (the service may call this at start)."""
    unsupported = [label for label in rt.corpus.taxonomy.labels if label not in set(rt.classifier.labels)]
    rt.llm.warm_prefix(suggest_system_text(rt.corpus, unsupported, rt.settings.llm_suggest_prompt))


# ---- ensemble -------------------------------------------------------------------------------------------------------
def _strictest(actions: list[Action]) -> Action:
    return min(actions, key=ACTION_SEVERITY.index) if actions else Action.no_action


@dataclass
class Decision:
    labels: list[str]
    action: Action
    abstain_reasons: list[str]
    notes: list[str]
    cited: list[Clause]  # one prohibition per suggested label (shared within an area), and the allowances that decided


def ensemble(rt: Runtime, fast: Suggestion, out: LLMSuggestion, cited: list[Clause]) -> Decision:
    """Combine the classifier's scores with the checked LLM answer (the rule in this module's docstring)."""
    corpus = rt.corpus
    taxonomy = corpus.taxonomy
    margin = rt.settings.fast_path_margin
    scores = {s.label: s for s in fast.scores}
    says = set(taxonomy.close([lab for lab in out.labels if lab in taxonomy.labels]))
    prohibitions = [c for c in cited if c.kind == "prohibition"]
    allowances: dict[str, Clause] = {}
    for c in cited:
        if c.kind != "prohibition":
            allowances.setdefault(c.area, c)
    fast_clauses = [corpus.get(c.clause_id) for c in fast.citations if c.clause_id in corpus.clauses]

    def citation_for(label: str, own_only: bool) -> Clause | None:
        area = taxonomy.labels[label].area
        pools = [prohibitions] if own_only else [prohibitions, [c for c in fast_clauses if c.kind == "prohibition"]]
        for pool in pools:
            for match in (lambda c: label in c.labels, lambda c: c.area == area):
                found = next((c for c in pool if match(c)), None)
                if found is not None:
                    return found
        return None

    labels: list[str] = []
    cites: dict[str, Clause] = {}
    uncited: list[str] = []
    notes: list[str] = []
    abstain: list[str] = []
    dropped: dict[str, str] = {}  # label -> why an exception removed it
    contested: list[Clause] = []  # exceptions the LLM found against a confident classifier label
    for label in taxonomy.labels:
        s = scores.get(label)
        scored = s is not None and s.supported and s.threshold is not None
        area = taxonomy.labels[label].area
        allowance = allowances.get(area)
        if scored and s.flagged:  # type: ignore[union-attr]
            assert s is not None and s.threshold is not None
            confident = s.score >= s.threshold + margin
            area_said = any(taxonomy.labels[lab].area == area for lab in says)
            if allowance is not None and not area_said:  # the LLM finds this area's exception and no violation of it
                if not confident:
                    dropped[label] = f"{label} not suggested: exception {allowance.id} ({allowance.title})"
                    continue
                abstain.append(f"the classifier is confident in {label} {s.score:.2f} (threshold {s.threshold:.2f}) but the LLM finds "
                               f"the exception {allowance.id} ({allowance.title})")
                contested.append(allowance)  # cited: the human deciding the escalation needs the exception in front of them
            own_only = False  # flagged and not excepted: kept, whether or not the LLM repeats it
        elif label in says:
            if scored and taxonomy.is_sub_label(label):
                notes.append(f"{label} not suggested: the classifier does not flag it")
                continue
            if scored and s.score < LLM_SUPPORT_FLOOR:  # type: ignore[union-attr]
                notes.append(f"{label} not suggested: the classifier scores it {s.score:.2f}")  # type: ignore[union-attr]
                continue
            own_only = True  # a label the classifier does not flag needs the LLM's own clause
        else:
            continue
        clause = citation_for(label, own_only)
        if clause is None:
            uncited.append(label)
            continue
        labels.append(label)
        cites[label] = clause
    for sub in list(labels):  # a base label implied by a suggested sub-label ('sexual' by 'sexual/minors') shares its clause
        for base in taxonomy.close([sub]):
            if base not in cites:
                cites[base] = cites[sub]
    labels = [lab for lab in taxonomy.labels if lab in cites]
    notes += [note for lab, note in dropped.items() if lab not in cites]  # an excepted base label a kept sub-label implies stays
    if uncited and not labels:
        abstain.append(f"no valid citation for {', '.join(uncited)}")
    elif uncited:
        notes.append(f"{', '.join(uncited)} not suggested: no valid citation")
    if out.abstain:
        abstain.append("the LLM abstained")
    elif out.action == Action.escalate.value:
        abstain.append("the LLM recommends escalation")
    label_areas = {taxonomy.labels[lab].area for lab in labels}
    # An exception is cited when it decided something: it removed a label the classifier flagged, it settled a label
    # scored just under its threshold (what sent the case to the full path), or it is why a case with no label is
    # allowed. One the LLM names beside real violations of other areas decides nothing and would only dilute the
    # citations a moderator checks. Replayed on tuning half B's recorded answers it removes 2 citations: an exception
    # named on a violating case, and a right one on a clean case still flagged in another area (without the near-
    # threshold part it removed 4, 3 of them wrong, but hid exceptions for labels the moderator sees scored close).
    near = [sc.label for sc in fast.scores if sc.supported and sc.threshold is not None and not sc.flagged
            and sc.score >= max(sc.threshold - margin, LLM_SUPPORT_FLOOR)]  # as candidate_areas: near and not ~0
    decided_areas = {taxonomy.labels[lab].area for lab in [*dropped, *near]}
    explaining = [a for area, a in allowances.items() if area not in label_areas and (not labels or area in decided_areas)]
    kept: list[Clause] = []
    for clause in [*(cites[lab] for lab in labels), *contested, *explaining]:
        if clause not in kept:
            kept.append(clause)
    unused = [c for c in cited if c not in kept]
    if unused:
        notes.append(f"{', '.join(c.id for c in unused)} not cited: {'it does' if len(unused) == 1 else 'they do'} not decide a suggested label")
    if abstain:
        action = Action.escalate
    elif not labels:
        action = Action.no_action
    else:
        allowed = [c.action for c in kept if c.kind == "prohibition"]
        action = Action(out.action) if out.action in {a.value for a in allowed} else _strictest(allowed)
    return Decision(labels, action, abstain, notes, kept)


# ---- the chain ------------------------------------------------------------------------------------------------------
def _fallback(rt: Runtime, fast: Suggestion, reason: str, t0: float, prompt_version: str | None, tokens: tuple[int, int] = (0, 0)) -> Suggestion:
    sug = fast.model_copy(deep=True)
    sug.fallback_reason = reason
    sug.prompt_version = prompt_version
    sug.prompt_tokens, sug.completion_tokens = tokens
    sug.model_ids = {**sug.model_ids, **rt.model_ids()}  # the LLM's id too, when it loaded
    sug.latency_ms = round(fast.latency_ms + (time.perf_counter() - t0) * 1000, 2)
    log.info("full path fell back to the fast path: %s", reason)
    return sug


class _ReasoningStream:
    """Pulls the value of the "reasoning" field out of streamed JSON text, decoding escapes as they complete."""

    KEY = '"reasoning"'

    def __init__(self, sink: OnText, lead: str = "") -> None:
        self.sink = sink
        self.lead = lead  # sent before the first text (a space between a two-turn prompt's two reasonings)
        self.emitted = False  # whether any text (not only ticks) reached the sink
        self.buf = ""
        self.pos = -1  # index in buf where the string value starts; -1 until found
        self.done = False

    def feed(self, piece: str) -> None:
        if self.done:
            self.sink("")  # a tick per piece after the reasoning: a cancelled consumer still stops the chain here
            return
        self.buf += piece
        if self.pos < 0:
            k = self.buf.find(self.KEY)
            if k < 0:
                return
            rest = self.buf[k + len(self.KEY):].lstrip(" :\n\t")
            if not rest.startswith('"'):
                return
            self.pos = len(self.buf) - len(rest) + 1
        out, i = [], self.pos
        while i < len(self.buf):
            ch = self.buf[i]
            if ch == '"':
                self.done = True
                i += 1
                break
            if ch == "\\":
                if i + 1 >= len(self.buf):
                    break
                esc = self.buf[i + 1]
                if esc == "u":
                    if i + 6 > len(self.buf):
                        break
                    try:
                        out.append(chr(int(self.buf[i + 2:i + 6], 16)))
                    except ValueError:
                        pass
                    i += 6
                    continue
                out.append({"n": "\n", "t": "\t", "r": "", "b": "", "f": ""}.get(esc, esc))
                i += 2
                continue
            out.append(ch)
            i += 1
        self.pos = i
        if out:
            self.sink(self.lead + "".join(out))
            self.lead = ""
            self.emitted = True


def _call(llm: ChatBackend, messages: list[Any], schema: dict[str, Any], max_tokens: int, deadline: float, on_text: OnText | None, purpose: str) -> StructuredResult:
    return llm.structured(messages, schema, max_tokens=max_tokens, deadline=deadline, on_text=on_text, purpose=purpose)


# A call allowed fewer completion tokens cannot finish the compact JSON answer (~75 tokens with suggest_v2): the repair
# is skipped instead. LLMBudget refuses smaller budgets for the same reason.
MIN_CALL_TOKENS = 64


def _run(rt: Runtime, case: Case, fast: Suggestion, on_text: OnText | None = None, budget: LLMBudget | None = None) -> Suggestion:
    t0 = time.perf_counter()
    prompt_name = rt.settings.llm_suggest_prompt
    prompt_version = load_prompt(prompt_name).version
    try:
        llm: ChatBackend = rt.llm  # loads once per process; the request's time budget starts after it
    except CopilotError as exc:
        return _fallback(rt, fast, exc.detail, t0, None)
    corpus = rt.corpus
    cache = suggestion_cache(rt)
    key = cache_key(rt, case, llm)
    hit = cache.get(key)
    if hit is not None:
        hit.latency_ms = round(fast.latency_ms + (time.perf_counter() - t0) * 1000, 2)
        hit.prompt_tokens = hit.completion_tokens = 0  # nothing was spent on this request
        if on_text is not None:
            on_text(hit.rationale)
        return hit
    try:  # one-time work outside the request's budget: evaluate (or restore) the fixed prefix's KV state
        llm.warm_prefix(suggest_system_text(corpus, unsupported_labels(fast.scores), prompt_name))
    except Exception as exc:
        return _fallback(rt, fast, f"LLM call failed: {getattr(exc, 'detail', None) or f'{type(exc).__name__}: {exc}'}", t0, prompt_version)
    timeout_s = min(rt.settings.llm_timeout_s, budget.timeout_s or rt.settings.llm_timeout_s) if budget else rt.settings.llm_timeout_s
    deadline = time.monotonic() + timeout_s
    token_budget = budget.max_tokens if budget is not None else None
    messages, offered = render_prompt(rt, case, fast)
    by_id = {c.id: c for c in offered.clauses}
    turns = two_turn(prompt_name)
    schema = suggestion_schema(corpus.taxonomy, list(by_id), case)
    described = ""  # a two-turn prompt's turn-1 description of the case: the rationale's first sentence
    described_note: str | None = None  # why a description was left out of the rationale
    tokens = [0, 0]
    spent = [0]  # completion tokens charged to the request's budget
    repair_reasons: list[str] = []

    def call_tokens() -> int:  # per call the service's cap; a request's budget covers first answer and repair together
        if token_budget is None:
            return rt.settings.llm_max_tokens
        return min(rt.settings.llm_max_tokens, token_budget - spent[0])

    echo_lines = suggest_echo_lines(prompt_name)

    def charge(res: StructuredResult, cap: int) -> None:
        tokens[0] += res.prompt_tokens
        tokens[1] += res.completion_tokens
        # a server that reports no usage is charged the call's whole cap: the budget must not be spent twice
        spent[0] += res.completion_tokens or (cap if res.raw else 0)

    def account(res: StructuredResult, cap: int) -> Checked:
        charge(res, cap)
        return check_suggestion(res.data, res.error, by_id, corpus, case, echo_lines)

    stream = _ReasoningStream(on_text) if on_text is not None else None
    hold = ExitStack()
    try:
        if turns:  # turn 1: the case alone, described (what streams first); turn 2: the whole answer, clauses in view
            hold.enter_context(llm.conversation(deadline))  # no other request between the turns (see conversation())
            cap = min(call_tokens(), DESCRIBE_CALL_TOKENS)
            first = _call(llm, messages, reasoning_schema(), cap, deadline, stream.feed if stream else None, "suggest-describe")
            charge(first, cap)
            said = (first.data or {}).get("reasoning")
            # the answer's repair cannot change this text: a faulty one is left out of the rationale (and of the
            # conversation: turn 2 must not read, as its own words, a clause ID or an instruction taken from the case)
            if not isinstance(said, str):
                described_note = f"the model's description of the case was left out ({first.error or 'no description'})"
            elif CLAUSE_ID_RE.search(said) or echoes(said, echo_lines, case.text()):
                described_note = "the model's description of the case was left out (" + (
                    "it named a clause" if CLAUSE_ID_RE.search(said) else "it repeated the prompt") + ")"
            else:
                described = tidy_cut(said)
            # as the model wrote it (compact JSON, unstripped), so the KV state of its own tokens is reused in turn 2
            turn1 = json.dumps({"reasoning": said if described else ""}, ensure_ascii=False, separators=(",", ":"))
            messages = [*messages, AIMessage(turn1), decide_message(fast.scores, offered.clauses, prompt_name)]
            if on_text is not None:  # turn 2's reasoning streams on, after the description
                on_text("")  # a consumer gone during turn 1 stops the chain here, before turn 2's prompt
                stream = _ReasoningStream(on_text, lead=" " if stream is not None and stream.emitted else "")
            if token_budget is not None and call_tokens() < MIN_CALL_TOKENS:
                return _fallback(rt, fast, f"the request's token budget ({token_budget}) was spent on the description of the case, "
                                 "so no answer", t0, prompt_version, (tokens[0], tokens[1]))
        cap = call_tokens()
        checked = account(_call(llm, messages, schema, cap, deadline, stream.feed if stream else None, "suggest"), cap)
        if checked.errors:
            log.info("LLM answer failed checks (%s); one repair", "; ".join(checked.errors))
            if on_text is not None:
                on_text("")  # a cancelled stream stops before the repair call, not after it
            # the repair's pieces only tick the sink: its reasoning would repeat what the console already shows
            ticks = (lambda _piece: on_text("")) if on_text is not None else None
            first_checked = checked
            repair_reasons = [*repair_reasons, *checked.errors]
            if (cap := call_tokens()) >= MIN_CALL_TOKENS:
                checked = account(_call(llm, with_repair(messages, prompt_name, checked.errors), schema, cap, deadline, ticks, "suggest-repair"), cap)
            elif checked.errors != [ECHO_ERROR]:  # an echo-only answer is still kept below, without its words
                sug = _fallback(rt, fast, f"LLM answer invalid and the request's token budget ({token_budget}) is spent, so no repair: "
                                + "; ".join(checked.errors[:4]), t0, prompt_version, (tokens[0], tokens[1]))
                sug.repair_reasons = repair_reasons
                return sug
            # An answer whose only fault is repeating the prompt passed every check that matters: keep its labels and
            # citations (the repair's if it is that, else the first answer's), not its words.
            for candidate in (checked, first_checked):
                if checked.errors and candidate.errors == [ECHO_ERROR]:
                    checked = candidate
                    checked.out.reasoning = NO_CASE_REASONING
                    checked.errors = []
            if checked.errors:
                sug = _fallback(rt, fast, "LLM answer invalid after one repair: " + "; ".join(checked.errors[:4]), t0, prompt_version, (tokens[0], tokens[1]))
                sug.repair_reasons = repair_reasons  # why the repair was asked for; fallback_reason says why it failed too
                return sug
    except CopilotError as exc:  # spent tokens of a call cut short still count
        tokens[0] += int(exc.extra.get("prompt_tokens", 0))
        tokens[1] += int(exc.extra.get("completion_tokens", 0))
        sug = _fallback(rt, fast, f"LLM call failed: {exc.detail}", t0, prompt_version, (tokens[0], tokens[1]))
        sug.repair_reasons = repair_reasons  # a repair call that timed out still says why it was made
        return sug
    except Exception as exc:  # a backend bug must not take the suggestion down: fall back and say why
        log.exception("LLM chain error")
        sug = _fallback(rt, fast, f"LLM call failed: {type(exc).__name__}: {exc}", t0, prompt_version, (tokens[0], tokens[1]))
        sug.repair_reasons = repair_reasons
        return sug
    finally:
        hold.close()
    out: LLMSuggestion = checked.out
    decision = ensemble(rt, fast, out, checked.clauses)
    if (reason := language_reason(case)) is not None:  # the LLM reads other languages, but the corpus and scores do not
        decision.abstain_reasons.append(reason)
        decision.action = Action.escalate
    reasoning = tidy_cut(out.reasoning)
    # a clause dropped from the LLM's answer may still be cited in the end (a label the classifier flags, backed by the
    # fast path's clause): a note saying it was dropped would then contradict the citation list
    cited_ids = {c.id for c in decision.cited}
    dropped_notes = [note for cid, note in checked.dropped.items() if cid not in cited_ids]
    notes = [*([described_note] if described_note else []), *dropped_notes, *decision.notes]
    if described and reasoning == NO_CASE_REASONING:  # the description still speaks to this case; a note says the rest
        reasoning = ""
        notes.insert(0, "the model gave no case-specific reasoning for its labels (it repeated the prompt)")
    if described and text_ratio(described.lower(), reasoning.lower()) >= REPEAT_RATIO:
        reasoning = ""  # turn 2 often says its description again (seen on `make run`): once is enough
    rationale = " ".join(r for r in (described, reasoning) if r) or "(no reasoning given)"
    if notes:
        rationale += " Note: " + "; ".join(notes) + "."
    if decision.abstain_reasons:
        rationale += " Escalated: " + "; ".join(decision.abstain_reasons) + "."
    citations = [
        Citation(clause_id=c.id, title=c.title, area=c.area, summary=c.summary, score=offered.scores.get(c.id)) for c in decision.cited
    ]
    sug = Suggestion(
        labels=decision.labels, scores=fast.scores, citations=citations, rationale=rationale, action=decision.action,
        abstained=bool(decision.abstain_reasons), abstain_reason="; ".join(decision.abstain_reasons) or None,
        evidence=checked.evidence, path="full", corpus_version=corpus.version, model_ids=rt.model_ids(),
        prompt_version=prompt_version, latency_ms=round(fast.latency_ms + (time.perf_counter() - t0) * 1000, 2),
        prompt_tokens=tokens[0], completion_tokens=tokens[1], repair_reasons=repair_reasons,
    )
    cache.put(key, sug)
    return sug


def suggest_full(rt: Runtime, case: Case, fast: Suggestion, budget: LLMBudget | None = None) -> Suggestion:
    """The full path for one case (the router in copilot/suggest.py calls it for mode=full and uncertain cases)."""
    return _run(rt, case, fast, budget=budget)


def stream_suggestion(rt: Runtime, case: Case, fast: Suggestion | None = None, cancel: threading.Event | None = None,
                      budget: LLMBudget | None = None) -> Iterator[tuple[str, Any]]:
    """Events for server-sent events: ("rationale", text chunk)* then ("suggestion", Suggestion).

    The chain runs in a worker thread; chunks are yielded as the model writes them. ``fast`` defaults to
    ``suggest_fast(rt, case)``. Setting ``cancel``, or closing this generator before its last event, stops the chain at
    its next token (see the module docstring); a cancelled chain's fallback is still the last event for a consumer that
    keeps reading.
    """
    if fast is None:
        from copilot.suggest import suggest_fast

        fast = suggest_fast(rt, case)
    q: queue.Queue[tuple[str, Any]] = queue.Queue()
    fast_sug = fast
    stop = cancel if cancel is not None else threading.Event()

    def on_text(text: str) -> None:
        if stop.is_set():
            raise StreamCancelled("the stream was cancelled (its consumer went away)")
        if text:  # "" is a tick: the chain is alive after its reasoning, nothing to show
            q.put(("rationale", text))

    def work() -> None:
        try:
            q.put(("suggestion", _run(rt, case, fast_sug, on_text=on_text, budget=budget)))
        except BaseException as exc:  # surfaced in the consumer's thread
            q.put(("error", exc))

    threading.Thread(target=work, name="copilot-llm-stream", daemon=True).start()
    finished = False
    try:
        while True:
            kind, value = q.get()
            if kind == "error":
                finished = True
                raise value
            if kind == "suggestion":
                finished = True
            yield kind, value
            if finished:
                return
    finally:
        if not finished:  # closed early: nobody reads the rest, so stop generating it
            stop.set()


def stream_rationale(rt: Runtime, case: Case, fast: Suggestion | None = None) -> Generator[str, None, Suggestion]:
    """Yield the rationale as it is generated; the generator's return value is the final Suggestion."""
    for kind, value in stream_suggestion(rt, case, fast):
        if kind == "rationale":
            yield value
        elif kind == "suggestion":
            return value  # type: ignore[no-any-return]
    raise RuntimeError("the stream ended without a suggestion")  # pragma: no cover
