"""Adapt the embedder to our policy language: contrastive fine-tuning (in-batch negatives, MNRL) of MiniLM on pairs
drawn from the corpus only: each violating example -> its prohibition clause, each allowed example -> its allowance
clause. Retrieval queries (eval/retrieval) are never used; they measure the result.

    copilot index finetune-embedder [--epochs 4]
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from copilot.policy.corpus import Corpus
from copilot.retrieval.chunks import corpus_chunks


@dataclass
class FinetuneArgs:
    out_dir: Path
    epochs: int = 4
    batch_size: int = 32
    lr: float = 3e-5
    scale: float = 20.0
    seed: int = 13


def corpus_pairs(corpus: Corpus) -> list[tuple[str, str, str]]:
    """(anchor, positive, clause_id): the anchor is an example, the positive the clause chunk it is linked to."""
    heads = {c.clause_id: c.text for c in corpus_chunks(corpus) if c.kind == "clause"}
    pairs = []
    for ch in corpus_chunks(corpus):
        if ch.kind != "clause":
            pairs.append((ch.text, heads[ch.clause_id], ch.clause_id))
    for c in corpus.active:  # the summary alone should also find its clause (plain-language questions read like summaries)
        pairs.append((f"{c.title}: {c.summary}", heads[c.id], c.id))
    return pairs


def _batches(pairs: list[tuple[str, str, str]], size: int, rng: random.Random) -> list[list[tuple[str, str, str]]]:
    """Batches where no clause appears twice, so no in-batch negative is really a positive."""
    pool = pairs[:]
    rng.shuffle(pool)
    batches: list[list[tuple[str, str, str]]] = []
    while pool:
        batch: list[tuple[str, str, str]] = []
        seen: set[str] = set()
        rest: list[tuple[str, str, str]] = []
        for p in pool:
            if len(batch) < size and p[2] not in seen:
                batch.append(p)
                seen.add(p[2])
            else:
                rest.append(p)
        batches.append(batch)
        pool = rest
    return batches


def finetune(corpus: Corpus, base: Path, args: FinetuneArgs) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer
    from tqdm.auto import tqdm

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    model = SentenceTransformer(str(base), device="cpu", local_files_only=True)
    model.train()
    pairs = corpus_pairs(corpus)
    rng = random.Random(args.seed)
    plan = [b for _ in range(args.epochs) for b in _batches(pairs, args.batch_size, rng)]
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, len(plan) // 10)) * max(0.0, 1 - s / len(plan)))
    t0 = time.time()
    bar = tqdm(plan, desc="fine-tuning embedder", unit="batch")
    for batch in bar:
        a = model.tokenize([p[0] for p in batch])
        b = model.tokenize([p[1] for p in batch])
        ea = torch.nn.functional.normalize(model(a)["sentence_embedding"], dim=-1)
        eb = torch.nn.functional.normalize(model(b)["sentence_embedding"], dim=-1)
        logits = args.scale * ea @ eb.T
        target = torch.arange(len(batch))
        loss = (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)) / 2
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(args.out_dir))
    info = {"base": str(base.name if base.name != "model" else base.parent.name), "pairs": len(pairs), "epochs": args.epochs,
            "batch_size": args.batch_size, "lr": args.lr, "seconds": round(time.time() - t0, 1), "corpus_version": corpus.version,
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds")}
    (args.out_dir / "finetune.json").write_text(json.dumps(info, indent=2))
    return info
