"""Prompts as versioned files: copilot/llm/prompts/<name>_v<N>.txt.

A file holds sections headed ``=== system ===``, ``=== user ===`` and ``=== repair ===``; lines before the first header
are comments. Placeholders are ``{{name}}``; they are substituted in one pass, so text put into a placeholder (a case,
a question) is never scanned for placeholders again.

The version id stored with every suggestion is ``<file stem>@<first 8 hex of the file's sha256>``: editing a prompt
without bumping its name still changes the id, so cached and stored results never mix prompt texts.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROMPT_DIR = Path(__file__).parent / "prompts"
_SECTION = re.compile(r"^=== (\w+) ===[ \t]*$", re.M)
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")

SUGGEST_PROMPT = "suggest_v2"
ASK_PROMPT = "ask_v1"


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: str
    sections: dict[str, str]

    def render(self, section: str, **values: str) -> str:
        text = self.sections[section]

        def sub(m: re.Match[str]) -> str:
            key = m.group(1)
            if key not in values:
                raise KeyError(f"prompt {self.version} section {section!r} needs {{{{{key}}}}}")
            return values[key]

        return _PLACEHOLDER.sub(sub, text)

    def placeholders(self, section: str) -> set[str]:
        return set(_PLACEHOLDER.findall(self.sections[section]))


@lru_cache
def load_prompt(name: str) -> PromptTemplate:
    path = PROMPT_DIR / f"{name}.txt"
    if not path.is_file():
        known = sorted(p.stem for p in PROMPT_DIR.glob("*.txt"))
        raise FileNotFoundError(f"no prompt {name!r} in {PROMPT_DIR} (known: {', '.join(known)})")
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    parts = _SECTION.split(text)
    sections = {parts[i]: parts[i + 1].strip("\n") for i in range(1, len(parts) - 1, 2)}
    missing = {"system", "user"} - set(sections)
    if missing:
        raise ValueError(f"prompt file {path} lacks section(s) {', '.join(sorted(missing))}")
    return PromptTemplate(name=name, version=f"{name}@{hashlib.sha256(raw).hexdigest()[:8]}", sections=sections)
