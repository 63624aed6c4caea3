"""Reports rendered from metrics.json alone: a Markdown summary and a self-contained HTML page with inline SVG plots."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _fmt(x: Any) -> str:
    return "-" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


def markdown(m: dict[str, Any]) -> str:
    run = m["run"]
    lines = [f"# Evaluation: {run['dataset']} ({run['mode']} path)", "",
             f"rows {run['rows']}, dataset hash {run['dataset_hash']}, corpus {run['corpus_version']}, models {run['model_ids']}, git {run['git']}, {run['created_at']}", "",
             f"- macro F1 {_fmt(m['macro']['f1'])} (95% CI {m['ci95'].get('macro_f1')}), macro AUPRC {_fmt(m['macro']['auprc'])}, micro F1 {_fmt(m['micro']['f1'])}",
             f"- flagged (any label): AUPRC {_fmt(m['flagged']['auprc'])} (95% CI {m['ci95'].get('flagged_auprc')}), F1 {_fmt(m['flagged']['f1'])}, "
             f"false-positive rate on clean rows {_fmt(m['flagged']['false_positive_rate_on_clean'])} (n={m['flagged']['n_clean']}), ECE {_fmt(m['flagged']['ece'])}",
             f"- citations (violating rows): precision {_fmt(m['citations_violating']['precision'])}, recall {_fmt(m['citations_violating']['recall'])} "
             f"(a prohibition of the right policy area: {_fmt(m.get('citations_area_violating', {}).get('precision'))} / {_fmt(m.get('citations_area_violating', {}).get('recall'))}); "
             f"invented clause IDs {m['invented_clause_ids']}; abstention rate {_fmt(m['abstention_rate'])}",
             f"- latency ms p50 {_fmt(m['latency_ms'].get('p50'))}, p95 {_fmt(m['latency_ms'].get('p95'))}, p99 {_fmt(m['latency_ms'].get('p99'))}", "",
             "| label | support | precision | recall | F1 | AUPRC | ROC-AUC | ECE |", "|---|---|---|---|---|---|---|---|"]
    for l, v in m["labels"].items():
        lines.append(f"| {l} | {v['support']} | {_fmt(v['precision'])} | {_fmt(v['recall'])} | {_fmt(v['f1'])} | {_fmt(v['auprc'])} | {_fmt(v['roc_auc'])} | {_fmt(v['ece'])} |")
    for field, vals in m.get("slices", {}).items():
        lines += ["", f"Slice by {field}:", "", "| value | n | macro F1 | flagged F1 | flagged AUPRC | FPR clean | abstention |", "|---|---|---|---|---|---|---|"]
        for v, s in vals.items():
            lines.append(f"| {v} | {s['n']} | {_fmt(s['macro_f1'])} | {_fmt(s['flagged_f1'])} | {_fmt(s['flagged_auprc'])} | {_fmt(s['fpr_clean'])} | {_fmt(s['abstention'])} |")
    return "\n".join(lines) + "\n"


def _svg_lines(series: dict[str, list[tuple[float, float]]], title: str, xl: str, yl: str, diagonal: bool = False,
               size: tuple[int, int, int] = (360, 280, 40), legend: bool = True) -> str:
    w, h, pad = size
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="{13 if w >= 300 else 11}">{html.escape(title)}</text>',
             f'<rect x="{pad}" y="{pad}" width="{w - 2 * pad}" height="{h - 2 * pad}" fill="none" stroke="#999"/>',
             f'<text x="{w / 2}" y="{h - 8}" text-anchor="middle" font-size="11">{xl}</text>',
             f'<text x="12" y="{h / 2}" font-size="11" transform="rotate(-90 12 {h / 2})" text-anchor="middle">{yl}</text>']

    def xy(x: float, y: float) -> str:
        return f"{pad + x * (w - 2 * pad):.1f},{h - pad - y * (h - 2 * pad):.1f}"

    if diagonal:
        parts.append(f'<polyline points="{xy(0, 0)} {xy(1, 1)}" stroke="#ccc" fill="none" stroke-dasharray="4"/>')
    for i, (name, pts) in enumerate(series.items()):
        c = COLORS[i % len(COLORS)]
        parts.append(f'<polyline points="{" ".join(xy(x, y) for x, y in pts)}" stroke="{c}" fill="none" stroke-width="1.5"><title>{html.escape(name)}</title></polyline>')
        if legend:
            parts.append(f'<text x="{w - pad + 2}" y="{pad + 12 * i}" font-size="9" fill="{c}">{html.escape(name[:14])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _svg_bars(values: list[int], title: str) -> str:
    w, h, pad = 360, 200, 30
    mx = max(values) if values else 1
    bw = (w - 2 * pad) / max(len(values), 1)
    bars = "".join(f'<rect x="{pad + i * bw:.1f}" y="{h - pad - v / mx * (h - 2 * pad):.1f}" width="{bw - 1:.1f}" height="{v / mx * (h - 2 * pad):.1f}" fill="#1f77b4"/>'
                   for i, v in enumerate(values))
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}"><text x="{w / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>{bars}</svg>'


def _heatmap(conf: dict[str, Any]) -> str:
    labels, mat = conf["labels"], conf["matrix"]
    mx = max((max(r) for r in mat), default=1) or 1
    head = "".join(f'<th class="rot"><div>{html.escape(l)}</div></th>' for l in labels)
    rows = []
    for l, r in zip(labels, mat, strict=True):
        cells = "".join(f'<td style="background: rgba(31,119,180,{v / mx:.2f})" title="gold {html.escape(l)}, predicted {html.escape(p)}: {v}">{v or ""}</td>'
                        for p, v in zip(labels, r, strict=True))
        rows.append(f"<tr><th>{html.escape(l)}</th>{cells}</tr>")
    return f'<table class="heat"><tr><th>gold \\ predicted</th>{head}</tr>{"".join(rows)}</table>'


MIN_SUPPORT_RELIABILITY = 5  # a label needs this many positives for its reliability diagram to say anything


def _label_reliability(m: dict[str, Any]) -> str:
    """Small multiples: one reliability diagram per label with enough positives (masked rows already excluded)."""
    plots = [_svg_lines({l: [(b["mean_p"], b["frac_pos"]) for b in v["reliability"]]}, f"{l} (ECE {_fmt(v['ece'])})", "mean predicted",
                        "fraction positive", diagonal=True, size=(220, 200, 30), legend=False)
             for l, v in m["labels"].items() if v.get("reliability") and v["support"] >= MIN_SUPPORT_RELIABILITY]
    if not plots:
        return ""
    return (f"<h2>Reliability per label</h2><p>Labels with at least {MIN_SUPPORT_RELIABILITY} positives; 10 equal-width score bins over "
            f"the rows that annotate the label; the dashed diagonal is perfect calibration.</p><div class='plots'>{''.join(plots)}</div>")


def html_report(m: dict[str, Any]) -> str:
    rel = m["flagged"].get("reliability", [])
    plots = [
        _svg_lines({l: pts for l, pts in list(m.get("pr_curves", {}).items())[:10]}, "Precision-recall (per label)", "recall", "precision"),
        _svg_lines({"flagged": [(b["mean_p"], b["frac_pos"]) for b in rel]}, "Reliability (flagged)", "mean predicted", "fraction positive", diagonal=True),
        _svg_bars(m.get("latency_hist", []), f"Latency histogram (p50 {_fmt(m['latency_ms'].get('p50'))} ms)"),
    ]
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown(m))
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ddd;padding:3px 6px;font-size:13px}.plots{display:flex;flex-wrap:wrap;gap:12px}"
             ".heat td{text-align:center;min-width:22px}.rot{height:110px;white-space:nowrap}.rot div{transform:rotate(-60deg);width:20px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Evaluation report</title><style>{style}</style></head><body>"
            f"{body}<h2>Plots</h2><div class='plots'>{''.join(plots)}</div>{_label_reliability(m)}<h2>Label confusion</h2>{_heatmap(m['confusion'])}"
            f"<details><summary>metrics.json</summary><pre>{html.escape(json.dumps(m['run'], indent=2))}</pre></details></body></html>")


def write_reports(m: dict[str, Any], out_dir: Path) -> None:
    (out_dir / "report.md").write_text(markdown(m), encoding="utf-8")
    (out_dir / "report.html").write_text(html_report(m), encoding="utf-8")
