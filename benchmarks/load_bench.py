"""Service load: throughput and p50/p95/p99 at concurrency 1, 8 and 32 for /v1/moderations and the fast suggest path,
driven from this process against a server started in a second process on loopback; plus the classifier's offline
batch-32 throughput measured in the same run, to show how much the micro-batcher recovers.

    python benchmarks/load_bench.py [--requests 200] [--port 8765]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np

TEXTS = [
    "this ref is blind, worst call of the season lol",
    "dm me for the menu 🍄💊 fast delivery in the city",
    "I know where you live and you'll regret posting that",
    "grandma's recipe for lemon cake, link in bio",
    "free giveaway!!! send 0.1 btc and get 1 btc back, verified",
    "anyone know a good physio for a torn acl?",
]


async def drive(url: str, key: str, path: str, concurrency: int, n: int) -> tuple[float, list[float], int]:
    lat: list[float] = []
    errors = 0
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60,
                                 limits=httpx.Limits(max_connections=concurrency)) as c:
        async def one(i: int) -> None:
            nonlocal errors
            text = TEXTS[i % len(TEXTS)] + f" #{i}"
            body = {"input": text} if path == "/v1/moderations" else {"case": {"caption": text}, "mode": "fast"}
            async with sem:
                t0 = time.perf_counter()
                r = await (c.get(path) if path == "/healthz" else c.post(path, json=body))
                lat.append((time.perf_counter() - t0) * 1000)
                errors += r.status_code != 200

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    return n / wall, lat, errors


def batch_totals(url: str, key: str) -> dict[str, tuple[float, float]]:
    """(texts, passes) so far per model, from the service's own /metrics histogram of shared-pass sizes."""
    text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {key}"}).text
    out = {}
    for model in ("classifier", "embedder"):
        vals = {kind: float(line.split()[-1]) for line in text.splitlines() for kind in ("sum", "count")
                if line.startswith(f'copilot_microbatch_size_{kind}{{model="{model}"}}')}
        out[model] = (vals.get("sum", 0.0), vals.get("count", 0.0))
    return out


def mean_pass(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> str:
    parts = []
    for model, (texts, passes) in after.items():
        dt, dp = texts - before[model][0], passes - before[model][1]
        if dp:
            parts.append(f"{model} {dt / dp:.1f}")
    return ", ".join(parts) or "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()
    data = tempfile.mkdtemp()
    key = "mc_benchmark_key_0123456789abcdef"
    env = {**os.environ, "COPILOT_DATA_DIR": data, "COPILOT_BOOTSTRAP_ADMIN_KEY": key, "COPILOT_LOG_LEVEL": "WARNING"}
    from copilot.config import get_settings

    s = get_settings()
    # reuse the built index so the server starts fast
    if (s.index_dir / "manifest.json").exists():
        import shutil

        shutil.copytree(s.index_dir, os.path.join(data, "index"))
    proc = subprocess.Popen([sys.executable, "-m", "copilot_cli", "serve", "--port", str(args.port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{args.port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit("server not ready")
        from copilot.classifier.inference import Classifier

        clf = Classifier(s.classifier_path, threads=s.torch_threads)
        batch = [TEXTS[i % len(TEXTS)] + f" #{i}" for i in range(32)]
        clf.predict_proba(batch)
        t0 = time.perf_counter()
        for _ in range(10):
            clf.predict_proba(batch, batch_size=32)
        offline = 320 / (time.perf_counter() - t0)
        del clf
        print(f"classifier offline batch-32 throughput (this process, while the server idles): {offline:.0f} cases/s\n")
        # The HTTP ceiling: the same client and server stack doing no model work. On 2 shared cores the per-request cost
        # of HTTP parsing, auth-free routing and JSON (client and server together) bounds every endpoint below.
        asyncio.run(drive(url, key, "/healthz", 4, 16))
        ceiling, hlat, _ = asyncio.run(drive(url, key, "/healthz", 32, args.requests))
        print(f"HTTP ceiling (GET /healthz, no model work, concurrency 32): {ceiling:.0f} req/s, p50 {statistics.median(hlat):.1f} ms\n")
        print("| endpoint | concurrency | req/s | p50 ms | p95 ms | p99 ms | errors | share of offline batch throughput | share of HTTP ceiling | mean texts per shared pass |\n|---|---|---|---|---|---|---|---|---|---|")
        for path in ("/v1/moderations", "/v1/suggest"):
            asyncio.run(drive(url, key, path, 4, 16))  # warm-up
            for conc in (1, 8, 32):
                before = batch_totals(url, key)
                rps, lat, err = asyncio.run(drive(url, key, path, conc, args.requests))
                sizes = mean_pass(before, batch_totals(url, key))
                print(f"| {path} | {conc} | {rps:.1f} | {statistics.median(lat):.1f} | {np.percentile(lat, 95):.1f} | {np.percentile(lat, 99):.1f} | {err} | {rps / offline:.0%} | {rps / ceiling:.0%} | {sizes} |")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


if __name__ == "__main__":
    main()
