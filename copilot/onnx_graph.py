"""ONNX Runtime helpers shared by the classifier and the sentence embedder (both MiniLM encoders on 2 CPU cores)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def fuse(src: Path, dst: Path, num_heads: int, hidden_size: int, num_layers: int) -> dict[str, int]:
    """Fuse a BERT graph with ONNX Runtime's transformer optimizer; returns the count of each fused op it made.

    The graph must have been exported with eager attention (the SDPA export is not a pattern the fusion recognises).
    Every encoder layer must come out with one Attention op: a partial fusion would quietly give back the speed.
    """
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=1)
    stats = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    if stats.get("Attention", 0) != num_layers:
        raise RuntimeError(f"ONNX attention fusion incomplete: {stats} for {num_layers} layers (a graph the BERT fusion does not know)")
    opt.save_model_to_file(str(dst))
    return stats


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # no spin-waiting: the classifier's and the embedder's pools (and llama.cpp) share 2 cores; spinning threads of
    # one session starve the other (review measured embed + classify 35 ms spinning vs 10 ms not, under load)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token id rows padded to the longest, and the attention mask (1 on real tokens)."""
    width = max(len(q) for q in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for r, q in enumerate(seqs):
        ids[r, : len(q)] = q
        mask[r, : len(q)] = 1
    return ids, mask


def length_groups(lengths: Sequence[int], batch_size: int, max_tokens: int) -> Iterator[np.ndarray]:
    """Indices of the inputs sorted by length, cut into passes of at most batch_size rows and max_tokens padded tokens.

    Why a token budget: past ~1k tokens a pass spills the CPU caches (attention is quadratic in length), so on these
    cores 256-token inputs run fastest 4 to a pass and 64-token ones 16 to a pass (benchmarks/RESULTS.md).
    """
    order = np.argsort(np.asarray(lengths), kind="stable")
    start = 0
    for k in range(1, len(order) + 1):
        if k == len(order) or k - start >= batch_size or (k - start + 1) * lengths[order[k]] > max_tokens:
            yield order[start:k]
            start = k
