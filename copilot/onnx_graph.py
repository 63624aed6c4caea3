"""ONNX Runtime helpers shared by the classifier and the sentence embedder (both MiniLM encoders on 2 CPU cores)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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


@contextmanager
def root_logging_untouched() -> Iterator[None]:
    """Run ONNX Runtime's quantiser without it configuring the root logger.

    It warns through `logging.warning`, which installs a root handler when there is none. From then on every library
    logger's DEBUG records reach stderr (bm25s's, in `copilot index build`). A NullHandler meanwhile keeps the root as
    it was. The root logger is process-wide: a `basicConfig()` from another thread in that window would do nothing.
    Quantising exports run once per model and data dir, so the window is rare and short."""
    root = logging.getLogger()
    guard = logging.NullHandler() if not root.handlers else None
    if guard:
        root.addHandler(guard)
    try:
        yield
    finally:
        if guard:
            root.removeHandler(guard)


def quantize_int8(src: Path, dst: Path, calibration: Sequence[dict[str, np.ndarray]], outlier_ratio: float = 8.0,
                  max_outliers: int = 16) -> dict[str, int]:
    """Dynamic int8 for every MatMul by a weight, with each input's outlier channels kept in fp32; returns counts.

    Why the split: transformer encoders such as mpnet carry "massive activations", a handful of hidden channels that
    reach 50-100 on the special tokens while the rest stay under ~5. Dynamic quantisation uses one activation scale per
    tensor, so those channels flatten everything else: plain int8 mpnet vectors fall to cosine 0.57-0.72 with the fp32
    ones (benchmarks/RESULTS.md, "Session 14"). As in LLM.int8(), the input channels whose calibrated maximum exceeds
    `outlier_ratio` x the median channel maximum (at most `max_outliers` per input) are zeroed in the int8 product and
    multiplied in fp32 on the side (X W = (X * mask) W + X[:, idx] W[idx, :]). Weights are int8 per output channel.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    weighted = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2]
    for k, node in enumerate(weighted):  # the split and the quantiser's exclusions address nodes by name
        node.name = node.name or f"/int8/weighted_matmul_{k}"
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:  # beside the cache: an mpnet graph is ~440 MB
        maxima = _input_maxima(model, sorted({n.input[0] for n in weighted}), calibration, Path(tmp) / "probe.onnx")
        outliers: dict[str, np.ndarray] = {}
        for name, m in maxima.items():
            top = np.argsort(-m, kind="stable")[:max_outliers]
            idx = np.sort(top[m[top] > outlier_ratio * float(np.median(m))])
            if len(idx):
                outliers[name] = idx
        fp32_side = _split_outliers(model, {n.name for n in weighted}, inits, outliers)
        split = Path(tmp) / "split.onnx"
        onnx.save(model, str(split))
        # DefaultTensorType: shape inference cannot type the outputs of fused com.microsoft ops (a fused BERT graph);
        # MatMulConstBOnly (the dynamic default, spelt out): attention's activation x activation products stay fp32
        with root_logging_untouched():
            quantize_dynamic(str(split), str(dst), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
                             nodes_to_exclude=fp32_side, extra_options={"MatMulConstBOnly": True, "DefaultTensorType": 1})
    return {"int8_matmuls": len(weighted), "fp32_side_matmuls": len(fp32_side), "inputs_split": len(outliers),
            "fp32_channels": int(sum(len(i) for i in outliers.values()))}


def _input_maxima(model: Any, inputs: list[str], calibration: Sequence[dict[str, np.ndarray]], probe_path: Path) -> dict[str, np.ndarray]:
    """Per-channel |max| of each named tensor over the real (unpadded) tokens of the calibration passes.

    The tensors are exposed as extra graph outputs in a copy saved at probe_path; `model` itself is left as it was."""
    import onnx
    from onnx import TensorProto, helper

    n_outputs = len(model.graph.output)
    model.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in inputs)
    try:
        onnx.save(model, str(probe_path))
    finally:
        del model.graph.output[n_outputs:]
    sess = session(probe_path, 2)
    maxima: dict[str, np.ndarray] = {}
    for feed in calibration:
        real = feed["attention_mask"].astype(bool)
        for name, act in zip(inputs, sess.run(inputs, feed), strict=True):
            if act.ndim != 3:
                raise RuntimeError(f"int8: MatMul input {name} has shape {act.shape}, not (batch, tokens, channels)")
            m = np.abs(act[real]).max(0)
            maxima[name] = np.maximum(maxima[name], m) if name in maxima else m
    return maxima


def _split_outliers(model: Any, weighted: set[str], inits: dict[str, Any], outliers: dict[str, np.ndarray]) -> list[str]:
    """Rewrite each weighted MatMul whose input has outlier channels as (X * mask) W + X[:, idx] W[idx, :], in place.

    The mask and the gather of an input are emitted once, just before its first consumer, so the node list stays in
    topological order. Returns the names of the fp32 side MatMuls (the quantiser must leave them alone)."""
    from onnx import helper, numpy_helper

    fp32_side: list[str] = []
    nodes: list[Any] = []
    emitted: set[str] = set()
    for node in model.graph.node:
        x = node.input[0] if node.op_type == "MatMul" and node.name in weighted else None
        if x is None or x not in outliers:
            nodes.append(node)
            continue
        idx = outliers[x]
        if x not in emitted:
            emitted.add(x)
            mask = np.ones(int(inits[node.input[1]].dims[0]), dtype=np.float32)
            mask[idx] = 0.0
            model.graph.initializer.extend([numpy_helper.from_array(mask, f"{x}/int8_mask"), numpy_helper.from_array(idx.astype(np.int64), f"{x}/fp32_idx")])
            nodes.append(helper.make_node("Mul", [x, f"{x}/int8_mask"], [f"{x}/int8_part"], name=f"{x}/int8_part"))
            nodes.append(helper.make_node("Gather", [x, f"{x}/fp32_idx"], [f"{x}/fp32_part"], axis=-1, name=f"{x}/fp32_part"))
        rows = f"{node.name}/fp32_rows"  # per node: a weight shared by two MatMuls may see different outlier channels
        model.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[node.input[1]])[idx].astype(np.float32), rows))
        out = node.output[0]
        node.input[0] = f"{x}/int8_part"
        node.output[0] = f"{out}/int8"
        side = f"{node.name}/fp32_side"
        nodes += [node, helper.make_node("MatMul", [f"{x}/fp32_part", rows], [f"{out}/fp32"], name=side),
                  helper.make_node("Add", [f"{out}/int8", f"{out}/fp32"], [out], name=f"{node.name}/sum")]
        fp32_side.append(side)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return fp32_side
