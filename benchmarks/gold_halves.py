"""Split the gold cases into two fixed halves for the full-path (LLM) measurements, which are too slow for all 232.

    python benchmarks/gold_halves.py [--seed 13] [--out var]

Half of every (area, plain-or-hard) group goes to each half (odd groups: the extra case to half A), drawn with the
seed. Half A (var/gold-half-a.jsonl) is where the fast and full paths are compared and reported; half B
(var/gold-half-b.jsonl) is where full-path choices (prompt, ensemble rule, floors) are tried first, so the reported
figures are not tuned on the cases they describe.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", type=Path, default=ROOT / "var")
    args = ap.parse_args()
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for path in sorted((ROOT / "eval" / "cases" / "gold").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                sl = row.get("source_labels") or {}
                groups[(sl.get("area", "?"), "plain" if sl.get("hard_kind", "plain") == "plain" else "hard")].append(row)
    rng = random.Random(args.seed)
    halves: dict[str, list[dict]] = {"a": [], "b": []}
    for key in sorted(groups):
        rows = groups[key][:]
        rng.shuffle(rows)
        cut = (len(rows) + 1) // 2
        halves["a"] += rows[:cut]
        halves["b"] += rows[cut:]
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in halves.items():
        target = args.out / f"gold-half-{name}.jsonl"
        target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        violating = sum(1 for r in rows if r.get("labels"))
        hard = sum(1 for r in rows if (r.get("source_labels") or {}).get("hard_kind", "plain") != "plain")
        print(f"{target}: {len(rows)} cases ({violating} violating, {hard} hard)")


if __name__ == "__main__":
    main()
