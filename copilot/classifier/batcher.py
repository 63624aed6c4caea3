"""Micro-batcher: concurrent requests share classifier forward passes.

Requests queue their texts; a single worker takes what is waiting (up to `max_batch`, waiting at most `max_wait_ms`
after the first arrival) and runs one batched forward pass in a worker thread, so the event loop is never blocked by
model work and 32 concurrent single-case requests cost a few batched passes instead of 32 single ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class _Item:
    text: str
    future: asyncio.Future[np.ndarray]


class MicroBatcher:
    def __init__(self, fn: Callable[[list[str]], np.ndarray], max_batch: int = 32, max_wait_ms: float = 4.0,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.fn = fn
        self.on_batch = on_batch  # e.g. a metrics histogram of batch sizes
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.queue: asyncio.Queue[_Item] | None = None
        self.worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def score(self, texts: list[str]) -> np.ndarray:
        if self.queue is None:
            self.queue = asyncio.Queue()
            self.worker = asyncio.create_task(self._run())
        loop = asyncio.get_running_loop()
        items = [_Item(t, loop.create_future()) for t in texts]
        for it in items:
            self.queue.put_nowait(it)
        return np.stack(await asyncio.gather(*(it.future for it in items)))

    async def _run(self) -> None:
        assert self.queue is not None
        while True:
            first = await self.queue.get()
            batch = [first]
            deadline = asyncio.get_running_loop().time() + self.max_wait
            while len(batch) < self.max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    while len(batch) < self.max_batch and not self.queue.empty():
                        batch.append(self.queue.get_nowait())
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), timeout))
                except TimeoutError:
                    break
            self.batches += 1
            self.items += len(batch)
            if self.on_batch is not None:
                self.on_batch(len(batch))
            try:
                out = await asyncio.to_thread(self.fn, [b.text for b in batch])
            except Exception as exc:  # hand the error to every waiter instead of killing the worker
                for b in batch:
                    if not b.future.done():
                        b.future.set_exception(exc)
                continue
            for b, row in zip(batch, out, strict=True):
                if not b.future.done():
                    b.future.set_result(row)

    async def close(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass
