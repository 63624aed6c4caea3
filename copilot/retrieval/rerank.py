"""Optional cross-encoder reranker, trained here from MiniLM on pairs drawn from the corpus only.

No reranker ships on PyPI (RECIPES.md), so `copilot index train-reranker` builds one: every corpus example and every
clause summary is a query whose positive is its linked clause; its hard negatives are the other clauses the hybrid
index ranks highest for it. The retrieval queries under eval/retrieval are never used: they measure the result.

The service uses the reranker only when `reranker_dir` points at a trained folder (COPILOT_RERANKER_DIR); it reorders
the hybrid top-N and never adds clauses the first stage did not find.
"""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from copilot.errors import ComponentMissing
from copilot.policy.corpus import Corpus
from copilot.retrieval.chunks import corpus_chunks

if TYPE_CHECKING:
    from copilot.retrieval.index import PolicyIndex

MAX_LENGTH = 160  # query + clause head; the rule tail adds little and costs quadratic attention time


def clause_passage(corpus: Corpus, clause_id: str) -> str:
    """What the reranker reads of a clause: title, summary and rule (exceptions only for allowances, where they are the point)."""
    c = corpus.clauses[clause_id]
    text = f"{c.title}. {c.summary} {c.rule}"
    if c.kind != "prohibition":
        text += " " + " ".join(c.exceptions)
    return text


def training_pairs(corpus: Corpus, index: PolicyIndex, negatives: int = 4, seed: int = 13) -> list[tuple[str, str, float]]:
    """(query, passage, label) pairs; hard negatives come from the first-stage ranking, excluding the gold clause."""
    rng = random.Random(seed)
    anchors: list[tuple[str, str]] = [(ch.text, ch.clause_id) for ch in corpus_chunks(corpus) if ch.kind != "clause"]
    anchors += [(f"{c.title}: {c.summary}", c.id) for c in corpus.active]
    pairs: list[tuple[str, str, float]] = []
    for text, gold in anchors:
        pairs.append((text, clause_passage(corpus, gold), 1.0))
        # The example itself is in the index, so its own clause ranks first; the next ones are the confusable neighbours.
        ranked = [h.clause_id for h in index.search(text, k=12, method="hybrid") if h.clause_id != gold]
        hard = ranked[:negatives]
        others = [cid for cid in corpus.clauses if cid != gold and cid not in hard]
        for cid in hard + rng.sample(others, 1):
            pairs.append((text, clause_passage(corpus, cid), 0.0))
    rng.shuffle(pairs)
    return pairs


def train_reranker(corpus: Corpus, index: PolicyIndex, base: Path, out_dir: Path, epochs: int = 2, batch_size: int = 16,
                   lr: float = 3e-5, seed: int = 13) -> dict[str, Any]:
    import torch
    from sentence_transformers import CrossEncoder
    from tqdm.auto import tqdm

    random.seed(seed)
    torch.manual_seed(seed)
    model = CrossEncoder(str(base), num_labels=1, max_length=MAX_LENGTH, device="cpu", local_files_only=True)
    pairs = training_pairs(corpus, index, seed=seed)
    net = model.model
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    steps = epochs * ((len(pairs) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * max(0.0, 1 - s / steps))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    tok = model.tokenizer
    t0 = time.time()
    bar = tqdm(total=steps, desc="training reranker", unit="batch")
    for _ in range(epochs):
        random.shuffle(pairs)
        for i in range(0, len(pairs), batch_size):
            batch = pairs[i:i + batch_size]
            enc = tok([p[0] for p in batch], [p[1] for p in batch], truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
            logits = net(**enc).logits.view(-1)
            loss = loss_fn(logits, torch.tensor([p[2] for p in batch]))
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    net.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(out_dir))
    info = {"base": "all-MiniLM-L6-v2", "pairs": len(pairs), "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "max_length": MAX_LENGTH, "seconds": round(time.time() - t0, 1), "corpus_version": corpus.version,
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds")}
    (out_dir / "reranker.json").write_text(json.dumps(info, indent=2))
    return info


class Reranker:
    """Scores (query, clause) pairs with the trained cross-encoder; loads from a local folder only."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        if not (path / "config.json").exists():
            raise ComponentMissing(f"reranker: no trained cross-encoder at {path} (copilot index train-reranker)")
        import torch
        from sentence_transformers import CrossEncoder

        torch.set_num_threads(threads)
        self.path = path
        self.model = CrossEncoder(str(path), max_length=MAX_LENGTH, device="cpu", local_files_only=True)
        info = path / "reranker.json"
        self.model_id = f"reranker:{json.loads(info.read_text())['trained_at']}" if info.exists() else f"reranker:{path.name}"

    def scores(self, query: str, passages: list[str]) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float32)
        out = self.model.predict([(query, p) for p in passages], batch_size=32, show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32).reshape(-1)
