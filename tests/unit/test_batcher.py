from __future__ import annotations

import asyncio

import numpy as np

from copilot.classifier.batcher import MicroBatcher


def test_concurrent_requests_share_forward_passes() -> None:
    calls: list[int] = []

    def fn(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return np.array([[len(t)] for t in texts], dtype=float)

    async def main() -> list[np.ndarray]:
        b = MicroBatcher(fn, max_batch=16, max_wait_ms=20)
        out = await asyncio.gather(*(b.score(["x" * i]) for i in range(1, 33)))
        await b.close()
        return out

    out = asyncio.run(main())
    assert [int(o[0][0]) for o in out] == list(range(1, 33))  # each caller gets its own row back
    assert sum(calls) == 32 and len(calls) <= 4 and max(calls) <= 16


def test_errors_reach_every_waiter_and_worker_survives() -> None:
    def fn(texts: list[str]) -> np.ndarray:
        if "boom" in texts:
            raise ValueError("boom")
        return np.zeros((len(texts), 1))

    async def main() -> None:
        b = MicroBatcher(fn, max_batch=8, max_wait_ms=1)
        try:
            await b.score(["boom"])
        except ValueError:
            pass
        else:
            raise AssertionError("error not propagated")
        assert (await b.score(["fine"])).shape == (1, 1)
        await b.close()

    asyncio.run(main())
