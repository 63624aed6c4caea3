"""Fine-tune MiniLM with a multi-label head, calibrate on dev, choose thresholds, write the model folder and card.

Resumable: a checkpoint (weights, optimiser, step, RNG) is written to <out>/checkpoints/ every `ckpt_every` steps and
picked up by the next run with the same arguments.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from copilot.classifier import data as D
from copilot.classifier.artifacts import THRESHOLDS_FILE, TRAIN_HASHES_FILE, Calibration, ClassifierMeta
from copilot.classifier.metrics import average_precision, best_f1_threshold, expected_calibration_error, prf, roc_auc
from copilot.config import get_settings
from copilot.errors import InvalidInput

log = logging.getLogger(__name__)


@dataclass
class TrainArgs:
    """Training arguments. Defaults are the shipped model's; `quick` trains on a sample for a first start."""

    out_dir: Path
    quick: bool = False
    epochs: int = 3
    resume: bool = True
    seed: int = 13
    batch_size: int = 32
    lr: float = 6e-5
    warmup: float = 0.06
    max_len: int = 128
    min_train_pos: int = 60  # a label with fewer training positives is reported unsupported, never faked
    min_dev_pos: int = 8
    pos_weight_cap: float = 20.0
    head_lr: float = 2e-3  # the new head starts from random weights; the encoder keeps the small lr
    oversample_below: int = 400  # rows carrying a label with fewer train positives are repeated (x2) per epoch
    exclude_source: str | None = None  # leave-one-source-out: train without it, report figures on it
    max_train: int | None = None
    ckpt_every: int = 200
    base_model: Path | None = None
    # Distillation: a stronger classifier's calibrated scores fill the labels a row's source does not annotate (masked
    # otherwise), weighted teacher_weight. The teacher must have been trained on the same train split (never dev).
    teacher_dir: Path | None = None
    teacher_weight: float = 0.5
    extra: dict = field(default_factory=dict)


def _set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _batches(examples: list[D.Example], lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Length-bucketed batches: sort within shuffled pools of 50 batches, so batches carry little padding."""
    idx = list(range(len(examples)))
    rng.shuffle(idx)
    pool = batch_size * 50
    batches: list[list[int]] = []
    for s in range(0, len(idx), pool):
        chunk = sorted(idx[s : s + pool], key=lambda i: lengths[i])
        batches.extend(chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def prepare(args: TrainArgs):  # type: ignore[no-untyped-def]
    from copilot.policy import load_corpus

    settings = get_settings()
    corpus = load_corpus(settings.corpus_dir)
    tax = corpus.taxonomy
    examples = D.load_public(tax, seed=args.seed) + D.load_written(tax) + D.load_corpus_examples(corpus)
    examples, n_overlap = D.drop_overlap(examples, D.eval_texts())
    examples = D.dedupe(examples)
    held: list[D.Example] = []
    if args.exclude_source:
        held = [e for e in examples if e.source == args.exclude_source]
        if not held:
            raise InvalidInput(f"no rows from source {args.exclude_source!r}; sources: {sorted({e.source for e in examples})}")
        examples = [e for e in examples if e.source != args.exclude_source]
    rng = random.Random(args.seed)
    train = [e for e in examples if e.split == "train"]
    dev = [e for e in examples if e.split == "dev"]
    limit = args.max_train or (3000 if args.quick else None)
    if limit and len(train) > limit:
        rng.shuffle(train)
        train = train[:limit]
    labels = tax.label_names
    counts = D.label_counts(train + dev, labels)
    supported, unsupported = [], {}
    for l in labels:
        tr, dv = counts["train"][l], counts["dev"][l]
        if tr >= args.min_train_pos and dv >= args.min_dev_pos:
            supported.append(l)
        else:
            unsupported[l] = f"too little data: {tr} train / {dv} dev positives (need {args.min_train_pos} / {args.min_dev_pos})"
    return corpus, train, dev, held, labels, supported, unsupported, counts, n_overlap


def teacher_scores(teacher_dir: Path, rows: list[D.Example], labels: list[str]) -> np.ndarray:
    """Calibrated teacher probabilities for each row and label (0 where the teacher lacks the label), cached on disk
    next to the teacher by text hash: scoring 12k rows with a large model takes minutes."""
    import hashlib

    from copilot.classifier.inference import Classifier

    cache_path = teacher_dir / "teacher_cache.npz"
    cache: dict[str, np.ndarray] = {}
    if cache_path.exists():
        with np.load(cache_path) as z:
            cache = {k: z[k] for k in z.files}
    keys = [hashlib.sha256(e.text.encode()).hexdigest()[:24] for e in rows]
    todo = sorted({k: e.text for k, e in zip(keys, rows, strict=True) if k not in cache}.items())
    if todo:
        teacher = Classifier(teacher_dir, backend="torch")
        from tqdm.auto import tqdm

        for s in tqdm(range(0, len(todo), 64), desc="teacher scores", unit="batch"):
            chunk = todo[s : s + 64]
            probs = teacher.predict_proba([t for _, t in chunk])
            for (k, _), p in zip(chunk, probs, strict=True):
                cache[k] = np.array([p[teacher.labels.index(l)] if l in teacher.labels else 0.0 for l in labels], dtype=np.float32)
        np.savez(cache_path, **cache)  # type: ignore[arg-type]
    return np.stack([cache[k] for k in keys]).astype(np.float32)


def run_training(args: TrainArgs) -> dict:
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    from copilot.retrieval.embedder import base_embedder_path

    t_start = time.time()
    _set_seed(args.seed)
    torch.set_num_threads(get_settings().torch_threads)
    _corpus, train, dev, held, all_labels, labels, unsupported, counts, n_overlap = prepare(args)
    if not labels:
        raise InvalidInput("no label has enough training data; check the data folders")
    li = [all_labels.index(l) for l in labels]
    log.info("training on %d rows, dev %d, %d supported labels: %s", len(train), len(dev), len(labels), ", ".join(labels))
    print(f"train {len(train)} rows, dev {len(dev)} rows; supported: {', '.join(labels)}; unsupported: {', '.join(unsupported) or '-'}")

    base = args.base_model or base_embedder_path()
    tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base), num_labels=len(labels), problem_type="multi_label_classification", local_files_only=True,
        id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})

    def encode(rows: list[D.Example]) -> list[list[int]]:
        return tok([e.text for e in rows], truncation=True, max_length=args.max_len)["input_ids"]

    if args.oversample_below:
        # Repeat rows of thin labels so they are not drowned by the large hate/spam sources (affects training only).
        pos = np.sum([e.y[li] * e.mask[li] for e in train], axis=0)
        thin = {k for k in range(len(labels)) if pos[k] < args.oversample_below}
        train = train + [e for e in train if any(e.y[li][k] * e.mask[li][k] for k in thin)]
        print(f"oversampled rows of {len(thin)} thin labels: {len(train)} training rows per epoch")
    train_ids = encode(train)
    Y = torch.tensor(np.stack([e.y[li] for e in train]))
    M = torch.tensor(np.stack([e.mask[li] for e in train]))
    if args.teacher_dir is not None:
        T = torch.tensor(teacher_scores(args.teacher_dir, train, labels))
        Y = torch.where(M > 0, Y, T)
        M = torch.where(M > 0, M, torch.full_like(M, args.teacher_weight))
        print(f"teacher {args.teacher_dir.name}: {int((M == args.teacher_weight).sum())} masked label slots filled with its scores")
    W = torch.tensor([e.weight for e in train], dtype=torch.float32)
    pos = (Y * M).sum(0)
    neg = ((1 - Y) * M).sum(0)
    pos_weight = torch.clamp(neg / pos.clamp(min=1), max=args.pos_weight_cap)

    rng = random.Random(args.seed)
    epoch_batches = [_batches(train, [len(x) for x in train_ids], args.batch_size, rng) for _ in range(args.epochs)]
    total = sum(len(b) for b in epoch_batches)
    head = [p for n, p in model.named_parameters() if n.startswith("classifier")]
    body = [p for n, p in model.named_parameters() if not n.startswith("classifier")]
    opt = torch.optim.AdamW([{"params": body, "lr": args.lr}, {"params": head, "lr": args.head_lr}], weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, int(args.warmup * total), total)
    ckpt_dir = args.out_dir / "checkpoints"
    ckpt = ckpt_dir / "state.pt"
    fingerprint = json.dumps({k: str(v) for k, v in asdict(args).items() if k not in ("resume", "ckpt_every")}, sort_keys=True)
    step = 0
    if args.resume and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            step = state["step"]
            print(f"resuming from step {step}/{total}")
        else:
            print("checkpoint belongs to other training arguments; starting fresh")
    model.train()
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none")
    pad = tok.pad_token_id
    bar = tqdm(total=total, initial=step, desc="training", unit="batch", dynamic_ncols=True)
    flat = [b for eb in epoch_batches for b in eb]
    for i in range(step, total):
        b = flat[i]
        width = max(len(train_ids[j]) for j in b)
        ids = torch.full((len(b), width), pad, dtype=torch.long)
        att = torch.zeros((len(b), width), dtype=torch.long)
        for r, j in enumerate(b):
            ids[r, : len(train_ids[j])] = torch.tensor(train_ids[j])
            att[r, : len(train_ids[j])] = 1
        logits = model(input_ids=ids, attention_mask=att).logits
        per = loss_fn(logits, Y[b]) * M[b]
        loss = (per.sum(1) * W[b]).sum() / (M[b].sum() + 1e-6)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (i + 1) % args.ckpt_every == 0 and i + 1 < total:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "step": i + 1, "fingerprint": fingerprint}, ckpt)
    bar.close()
    model.eval()
    train_seconds = time.time() - t_start

    dev_logits = predict_logits(model, tok, [e.text for e in dev], args.max_len)
    dY = np.stack([e.y[li] for e in dev])
    dM = np.stack([e.mask[li] for e in dev])
    cal = fit_platt(dev_logits, dY, dM)
    dev_p = cal.apply(dev_logits)
    thresholds = {l: best_f1_threshold(dY[dM[:, k] > 0, k], dev_p[dM[:, k] > 0, k]) for k, l in enumerate(labels)}
    dev_metrics = label_metrics(dY, dev_p, dM, labels, thresholds)
    held_metrics = None
    if held:
        hl = predict_logits(model, tok, [e.text for e in held], args.max_len)
        held_metrics = label_metrics(np.stack([e.y[li] for e in held]), cal.apply(hl), np.stack([e.mask[li] for e in held]), labels, thresholds)

    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    family = "mpnet" if "mpnet" in str(base).lower() else "minilm"
    model_id = f"{family}-multilabel-{datetime.now(UTC).strftime('%Y%m%d')}-s{args.seed}" + (f"-no-{args.exclude_source}" if args.exclude_source else "") + ("-distilled" if args.teacher_dir else "")
    for stale in ("model.int8.onnx", "model.onnx", "onnx_report.json"):  # exported from the previous weights
        (out / stale).unlink(missing_ok=True)
    model.half().save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    ClassifierMeta(labels=labels, unsupported=unsupported, base_model=str(base.name if base.name != "model" else base.parent.name),
                   max_len=args.max_len, model_id=model_id, extra={"trained_at": datetime.now(UTC).isoformat(timespec="seconds")}).write(out)
    cal.write(out, labels, "platt-per-label on dev logits")
    (out / THRESHOLDS_FILE).write_text(json.dumps({"operating_point": "max F1 per label on the dev split (calibrated scores)",
                                                   "thresholds": {l: round(v, 4) for l, v in thresholds.items()}}, indent=2))
    import gzip

    with gzip.open(out / TRAIN_HASHES_FILE, "wt") as f:
        f.write("\n".join(sorted({D.text_key(e.text) for e in train})))
    report = {
        "model_id": model_id, "args": {k: str(v) for k, v in asdict(args).items()}, "train_rows": len(train), "dev_rows": len(dev),
        "train_sources": dict(sorted(_count_sources(train).items())), "dev_sources": dict(sorted(_count_sources(dev).items())),
        "dropped_eval_overlap": n_overlap, "label_counts": counts, "supported": labels, "unsupported": unsupported,
        "dev": dev_metrics, "held_out_source": args.exclude_source, "held_out": held_metrics, "train_seconds": round(train_seconds, 1),
    }
    (out / "training_report.json").write_text(json.dumps(report, indent=2))
    from copilot.classifier.card import write as write_card

    write_card(out)
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    print(f"dev macro AUPRC {dev_metrics['macro']['auprc']:.3f}, macro F1 {dev_metrics['macro']['f1']:.3f}; flagged AUPRC {dev_metrics['flagged']['auprc']:.3f}")
    if held_metrics:
        print(f"held-out {args.exclude_source}: macro AUPRC {held_metrics['macro']['auprc']:.3f}")
    return report


def _count_sources(rows: list[D.Example]) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(e.source for e in rows))


def predict_logits(model, tok, texts: list[str], max_len: int, batch_size: int = 64) -> np.ndarray:  # type: ignore[no-untyped-def]
    import torch

    order = np.argsort([len(t) for t in texts])
    out = np.zeros((len(texts), model.config.num_labels), np.float32)
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            idx = order[s : s + batch_size]
            enc = tok([texts[i] for i in idx], truncation=True, max_length=max_len, padding=True, return_tensors="pt")
            out[idx] = model(**enc).logits.float().numpy()
    return out


def fit_platt(logits: np.ndarray, y: np.ndarray, mask: np.ndarray) -> Calibration:
    from sklearn.linear_model import LogisticRegression

    n = logits.shape[1]
    a, b = np.ones(n, np.float32), np.zeros(n, np.float32)
    for k in range(n):
        m = mask[:, k] > 0
        yy = y[m, k]
        if yy.sum() < 3 or (1 - yy).sum() < 3:
            continue
        lr = LogisticRegression(C=100.0).fit(logits[m, k : k + 1], yy)
        a[k], b[k] = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    return Calibration(a, b)


def label_metrics(y: np.ndarray, p: np.ndarray, mask: np.ndarray, labels: list[str], thresholds: dict[str, float]) -> dict:
    per = {}
    for k, l in enumerate(labels):
        m = mask[:, k] > 0
        yy, pp = y[m, k], p[m, k]
        pr, rc, f1 = prf(yy, pp >= thresholds[l])
        per[l] = {"support": int(yy.sum()), "n": int(m.sum()), "auprc": _r(average_precision(yy, pp)), "roc_auc": _r(roc_auc(yy, pp)),
                  "precision": _r(pr), "recall": _r(rc), "f1": _r(f1), "ece": _r(expected_calibration_error(yy, pp))}
    valid = [v for v in per.values() if v["support"] > 0]
    macro = {k: _r(float(np.mean([v[k] for v in valid if not math.isnan(v[k])]))) for k in ("auprc", "roc_auc", "precision", "recall", "f1")} if valid else {}
    # Binary "flagged": any label. Only rows annotated for every supported label count, or a masked label would look negative.
    full = mask.min(1) > 0
    fy = y[full].max(1) if full.any() else np.zeros(0)
    fp_ = p[full].max(1) if full.any() else np.zeros(0)
    fpred = (p[full] >= np.array([thresholds[l] for l in labels])).any(1) if full.any() else np.zeros(0, bool)
    fpr, frc, ff1 = prf(fy, fpred)
    flagged = {"n": int(full.sum()), "support": int(fy.sum()), "auprc": _r(average_precision(fy, fp_)), "precision": _r(fpr), "recall": _r(frc), "f1": _r(ff1)}
    return {"labels": per, "macro": macro, "flagged": flagged}


def _r(x: float) -> float:
    return round(float(x), 4) if not math.isnan(x) else float("nan")
