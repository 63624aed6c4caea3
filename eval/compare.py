"""Compare two runs on the same dataset: per-label F1 deltas with paired-bootstrap significance, and changed cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from copilot.errors import InvalidInput
from copilot.taxonomy import Taxonomy
from eval.datasets import read_many
from eval.metrics import label_metrics


def load_run(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        m = json.loads((folder / "metrics.json").read_text())
        preds = [json.loads(l) for l in (folder / "predictions.jsonl").read_text().splitlines() if l.strip()]
    except FileNotFoundError as exc:
        raise InvalidInput(f"{folder} is not an evaluation run folder ({exc.filename} missing)") from None
    return m, preds


def compare(a_dir: Path, b_dir: Path, taxonomy: Taxonomy, rounds: int = 1000, seed: int = 11) -> dict[str, Any]:
    from eval.runner import arrays

    ma, pa = load_run(a_dir)
    mb, pb = load_run(b_dir)
    if ma["run"]["dataset_hash"] != mb["run"]["dataset_hash"]:
        raise InvalidInput(f"runs are on different datasets ({ma['run']['dataset_hash']} vs {mb['run']['dataset_hash']}); a comparison would mean nothing")
    rows = read_many([Path(p) for p in ma["run"]["dataset"].split(",")], taxonomy)
    rows = rows[: len(pa)]
    ids = [r.id for r in rows]
    if ids != [p["id"] for p in pa] or ids != [p["id"] for p in pb]:
        raise InvalidInput("the runs' predictions do not line up with the dataset rows")
    labels = sorted(set(pa[0]["scores"]) & set(pb[0]["scores"]), key=taxonomy.label_names.index)
    Ya, Sa, Pa, M, keep = arrays(rows, pa, labels)
    _, Sb, Pb, _, _ = arrays(rows, pb, labels)
    Y, M, Pa, Pb = Ya[keep], M[keep], Pa[keep], Pb[keep]
    n = len(Y)
    la = label_metrics(Y, Sa[keep], Pa, M, labels)
    lb = label_metrics(Y, Sb[keep], Pb, M, labels)
    rng = np.random.default_rng(seed)
    idxs = [rng.integers(0, n, n) for _ in range(rounds)]
    out: dict[str, Any] = {"a": str(a_dir), "b": str(b_dir), "rows": n, "labels": {}}

    def f1(Yx: np.ndarray, Px: np.ndarray, Mx: np.ndarray, k: int) -> float:
        m = Mx[:, k] > 0
        y, p = Yx[m, k] > 0, Px[m, k] > 0
        tp = (y & p).sum()
        d = 2 * tp + (~y & p).sum() + (y & ~p).sum()
        return float(2 * tp / d) if d else 0.0

    for k, l in enumerate(labels):
        fa, fb = la["labels"][l]["f1"], lb["labels"][l]["f1"]
        deltas = np.array([f1(Y[i], Pb[i], M[i], k) - f1(Y[i], Pa[i], M[i], k) for i in idxs])
        # two-sided paired-bootstrap p-value: how often the resampled delta crosses zero
        p = float(min(1.0, 2 * min((deltas <= 0).mean(), (deltas >= 0).mean())))
        out["labels"][l] = {"support": la["labels"][l]["support"], "f1_a": fa, "f1_b": fb,
                            "delta": None if fa is None or fb is None else round(fb - fa, 4), "p_value": round(p, 4)}
    out["macro_f1"] = {"a": la["macro"]["f1"], "b": lb["macro"]["f1"]}
    out["changed"] = [{"id": x["id"], "a": x["labels"], "b": y["labels"], "gold": r.labels, "citations_a": x["citations"], "citations_b": y["citations"]}
                      for x, y, r in zip(pa, pb, rows, strict=True) if sorted(x["labels"]) != sorted(y["labels"]) or x["citations"] != y["citations"]]
    return out


def markdown(c: dict[str, Any]) -> str:
    lines = [f"# Compare {c['a']} (A) -> {c['b']} (B), {c['rows']} rows", "",
             f"macro F1: A {c['macro_f1']['a']} -> B {c['macro_f1']['b']}", "",
             "| label | support | F1 A | F1 B | delta | paired-bootstrap p |", "|---|---|---|---|---|---|"]
    for l, v in c["labels"].items():
        flag = " *" if v["p_value"] < 0.05 and v["delta"] else ""
        lines.append(f"| {l} | {v['support']} | {v['f1_a']} | {v['f1_b']} | {v['delta']}{flag} | {v['p_value']} |")
    lines += ["", f"{len(c['changed'])} cases changed their labels or citations:", ""]
    for x in c["changed"][:50]:
        lines.append(f"- {x['id']}: {x['a']} -> {x['b']} (gold {x['gold']}); citations {x['citations_a']} -> {x['citations_b']}")
    return "\n".join(lines) + "\n"
