"""Long-text windowing of the classifier (copilot/classifier/inference.py), with the shipped model's real tokenizer.

The forward pass is replaced by one that marks which kind of window it saw, so these tests check the windowing and the
narrative-label masking exactly; the model's own behaviour on long texts is tested in tests/integration/test_long_text.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from copilot.classifier.inference import NARRATIVE_LABELS, Classifier
from copilot.config import Settings
from copilot.onnx_graph import length_groups


@pytest.fixture(scope="module")
def clf() -> Classifier:
    s = Settings()
    return Classifier(s.classifier_path, threads=1, backend="torch", long_window=64)


def _ntok(clf: Classifier, text: str) -> int:
    return len(clf.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_short_text_is_one_full_window(clf: Classifier) -> None:
    windows, owner, local = clf._windows(["a short caption", ""])
    assert owner == [0, 1] and local == [False, False]
    assert windows[1] == [clf.tokenizer.cls_token_id, clf.tokenizer.sep_token_id]  # empty text still gets a row


def test_long_text_gets_full_windows_to_the_end_and_local_windows(clf: Classifier) -> None:
    text = " ".join(f"sentence number {i} is here." for i in range(60))
    n = _ntok(clf, text)
    assert n > clf.max_len
    windows, _owner, local = clf._windows([text])
    ids = clf.tokenizer(text, add_special_tokens=False)["input_ids"]
    full = [w for w, loc in zip(windows, local, strict=True) if not loc]
    short = [w for w, loc in zip(windows, local, strict=True) if loc]
    assert all(len(w) == clf.max_len for w in full)  # full windows are full-length, including the last one
    assert full[-1][1:-1] == ids[-(clf.max_len - 2):]  # ...which ends at the text's end
    assert short and all(len(w) <= 64 for w in short)
    # every token is read by some full window
    covered = set()
    for w in full:
        body = w[1:-1]
        start = next(i for i in range(len(ids)) if ids[i : i + len(body)] == body)
        covered.update(range(start, start + len(body)))
    assert covered == set(range(len(ids)))


def test_local_windows_start_at_sentences_and_lines(clf: Classifier) -> None:
    chat = "\n".join(f"user{i}: nice stream tonight lol" for i in range(30)) + "\nuser99: I will find you and hurt you"
    windows, _, local = clf._windows([chat])
    last_line = clf.tokenizer("user99: I will find you and hurt you", add_special_tokens=False)["input_ids"]
    # one short window reads the last line alone, from its first token
    assert any(loc and w[1:-1] == last_line for w, loc in zip(windows, local, strict=True))


def test_unpunctuated_text_still_gets_stepped_local_windows(clf: Classifier) -> None:
    text = " ".join(["word"] * 400)
    _, _, local = clf._windows([text])
    assert sum(local) >= 400 // 62  # a start every half window at least


def test_short_windows_do_not_speak_for_narrative_labels(clf: Classifier, monkeypatch: pytest.MonkeyPatch) -> None:
    # full windows say -5 for every label, short windows +5: narrative labels must keep the full windows' value
    def forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        lengths = mask.sum(1)
        return np.where((lengths < clf.max_len)[:, None], 5.0, -5.0).repeat(len(clf.labels), 1).astype(np.float32)

    monkeypatch.setattr(clf, "_forward", forward)
    text = " ".join(f"sentence number {i} is here." for i in range(60))
    out = clf.logits([text, "short"])
    for k, label in enumerate(clf.labels):
        assert out[0, k] == (-5.0 if label in NARRATIVE_LABELS else 5.0), label
    assert (out[1] == 5.0).all()  # a short text is one (short, non-local) window: every label speaks


def test_window_setting_is_validated() -> None:
    with pytest.raises(ValidationError, match="LONG_TEXT_WINDOW"):
        Settings(long_text_window=3)
    assert Settings(long_text_window=0).long_text_window == 0


def test_token_budget_groups_change_passes_not_scores() -> None:
    """Grouping by padded-token budget (speed) must give the same scores as one big batch (torch fp32: exact; the int8
    graph's dynamic activation scales depend on the batch, which `copilot export-onnx` gates separately)."""
    s = Settings()
    texts = ["ok", "see you tomorrow at the game", " ".join(["this is a longer caption about the weekend trip"] * 12),
             "i will find where you live", " ".join(f"line {i} of a transcript." for i in range(80))]
    small = Classifier(s.classifier_path, threads=1, backend="torch", max_batch_tokens=128)
    large = Classifier(s.classifier_path, threads=1, backend="torch", max_batch_tokens=1_000_000)
    windows, _, _ = small._windows(texts)
    lengths = [len(w) for w in windows]
    groups = list(length_groups(lengths, 32, small.max_batch_tokens))
    assert sorted(int(i) for g in groups for i in g) == list(range(len(windows)))  # every window once
    assert all(len(g) == 1 or len(g) * max(lengths[i] for i in g) <= 128 for g in groups)
    assert len(groups) > len(list(length_groups(lengths, 32, large.max_batch_tokens)))
    np.testing.assert_allclose(small.predict_proba(texts), large.predict_proba(texts), atol=1e-5)


def test_fast_token_ids_equal_the_transformers_tokenizer(clf: Classifier) -> None:
    texts = ["", "a short caption", "ÜBER café 🔪🔪 lol!!!", "x" * 3000, " ".join(f"sentence {i}." for i in range(400)), "tab\tand\nnewline"]
    assert clf._ids(texts) == clf.tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
