"""Draft continuations for speculative decoding of schema-constrained JSON on a local model.

The local model writes one token per full pass over its weights; a batch of ten proposed tokens reuses each weight
it reads, so it costs less than ten passes (on 2 CPU cores with the current llama.cpp build, about two: see
benchmarks/RESULTS.md, which is why this is off by default). Much of a structured answer is predictable without the
model: the keys and punctuation the schema fixes (``","labels":[``), the rest of an enum value once its first
characters are written (``harassment/threat`` -> ``ening"``), and the words that follow in the case once a quote
from it has started. `JsonDraft` proposes that text; the decoder evaluates it in one batch and keeps the longest
prefix that matches the model's own greedy, grammar-constrained choice at each position. The answer is the model's,
not the draft's, but it can differ from one-token-at-a-time decoding where two tokens are near-tied, because a
batched pass sums in another order (measured on 120 gold cases: 16 changed labels or citations; macro F1 0.450 vs
0.440). Free text (the reasoning) gets no proposal: only the JSON around it and quotes from the case are drafted.

The scanner understands the compact JSON our grammars produce (no whitespace, properties in schema order, string,
boolean and array-of-string values), which is all the suggestion and Q&A schemas use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# At most this many characters are proposed at once (about 10 to 15 tokens: one verification batch).
MAX_DRAFT_CHARS = 48


@dataclass(frozen=True)
class _Field:
    name: str
    kind: str  # string | boolean | array
    enum: tuple[str, ...] | None = None
    sources: tuple[str, ...] | None = None  # x-substring-of: quotes are runs of words of these texts
    max_items: int | None = None


def _field(name: str, node: dict[str, Any]) -> _Field:
    kind = node.get("type", "string")
    if kind == "array":
        items = node.get("items", {})
        return _Field(name, "array", _enum(items), _sources(items), node.get("maxItems"))
    return _Field(name, "boolean" if kind == "boolean" else "string", _enum(node), _sources(node))


def _enum(node: dict[str, Any]) -> tuple[str, ...] | None:
    values = node.get("enum")
    return tuple(str(v) for v in values) if values else None


def _sources(node: dict[str, Any]) -> tuple[str, ...] | None:
    texts = node.get("x-substring-of")  # the grammar joins a quote's words by single spaces: so do the sources
    return tuple(" ".join(t.split()) for t in texts) if texts else None


class _Partial(Exception):
    def __init__(self, proposal: str) -> None:
        self.proposal = proposal


class JsonDraft:
    """Proposes the text that most likely follows a prefix of a compact JSON object of the given schema."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.fields = [_field(name, node) for name, node in schema.get("properties", {}).items()]

    def propose(self, text: str) -> str:
        try:
            self._scan(text)
        except _Partial as p:
            return p.proposal[:MAX_DRAFT_CHARS]
        return ""

    # ---- scanning: raises _Partial(proposal) where the text ends; returns quietly when it strays from the schema ----
    def _scan(self, text: str) -> None:
        if not self.fields:
            return
        pos = self._literal(text, 0, "{")
        if pos < 0:
            return
        for i, f in enumerate(self.fields):
            key = ("," if i else "") + f'"{f.name}":'
            pos = self._literal(text, pos, key, then=self._opener(f))
            if pos < 0:
                return
            pos = self._value(text, pos, f)
            if pos < 0:
                return
        self._literal(text, pos, "}")

    @staticmethod
    def _opener(f: _Field) -> str:
        return {"string": '"', "array": "["}.get(f.kind, "")

    def _literal(self, text: str, pos: int, lit: str, then: str = "") -> int:
        """Match a forced literal at pos: -1 if the text differs, the position after it if complete."""
        rest = text[pos:pos + len(lit)]
        if len(rest) < len(lit):
            if lit.startswith(rest):
                raise _Partial(lit[len(rest):] + then)
            return -1
        return pos + len(lit) if rest == lit else -1

    def _value(self, text: str, pos: int, f: _Field) -> int:
        if f.kind == "boolean":
            rest = text[pos:]
            for word in ("true", "false"):
                if rest.startswith(word):
                    return pos + len(word)
                if rest and word.startswith(rest):
                    raise _Partial(word[len(rest):])
            if not rest:
                raise _Partial("")
            return -1
        if f.kind == "string":
            return self._string(text, pos, f.enum, f.sources, closer="")
        # array of strings
        pos = self._literal(text, pos, "[")
        if pos < 0:
            return -1
        if f.max_items == 0:
            return self._literal(text, pos, "]")
        n = 0
        while True:
            if pos >= len(text):
                raise _Partial("")  # a quote or the closing bracket: the model's choice
            if text[pos] == "]":
                return pos + 1
            if n and text[pos] == ",":
                pos += 1
            elif n:
                return -1
            full = f.max_items is not None and n + 1 >= f.max_items
            pos = self._string(text, pos, f.enum, f.sources, closer="]" if full else "")
            if pos < 0:
                return -1
            n += 1
            if full:
                return self._literal(text, pos, "]")

    def _string(self, text: str, pos: int, enum: tuple[str, ...] | None, sources: tuple[str, ...] | None, closer: str) -> int:
        if pos >= len(text):
            raise _Partial('"' + self._complete("", enum, sources, closer))
        if text[pos] != '"':
            return -1
        i = pos + 1
        while i < len(text):
            ch = text[i]
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                return i + 1
            i += 1
        value = text[pos + 1:]
        if value.endswith("\\"):
            raise _Partial("")
        raise _Partial(self._complete(value, enum, sources, closer))

    @staticmethod
    def _complete(value: str, enum: tuple[str, ...] | None, sources: tuple[str, ...] | None, closer: str) -> str:
        if enum:
            rests = [v[len(value):] for v in enum if v.startswith(value)]
            if len(rests) == 1:
                return rests[0] + '"' + closer
            return _common_prefix(rests)
        if sources and value:
            for src in sources:
                at = src.find(value)
                if at >= 0:
                    return _json_escape(src[at + len(value):at + len(value) + MAX_DRAFT_CHARS])
        return ""


def _common_prefix(items: list[str]) -> str:
    if not items:
        return ""
    lo, hi = min(items), max(items)
    n = 0
    while n < len(lo) and lo[n] == hi[n]:
        n += 1
    return lo[:n]


def _json_escape(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]
