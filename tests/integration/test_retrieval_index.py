"""Real FAISS + BM25 index over the bundled corpus with the packaged MiniLM embedder."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from copilot.errors import ComponentMissing
from copilot.policy import Corpus, load_corpus
from copilot.retrieval.chunks import Chunk
from copilot.retrieval.embedder import Embedder, get_embedder
from copilot.retrieval.index import BM25_WEIGHT, RRF_K, PolicyIndex, _best_per_clause, rrf

pytestmark = pytest.mark.slow


def test_rrf_orders_by_summed_reciprocal_ranks() -> None:
    fused = rrf([{"A": 0.9, "B": 0.5}, {"B": 3.0, "C": 1.0}], k=60)
    assert fused["B"] == pytest.approx(1 / 62 + 1 / 61)
    assert max(fused, key=fused.get) == "B"
    # a half-weight second ranking: its first place counts half, so A (first in the full-weight ranking) wins
    weighted = rrf([{"A": 0.9, "B": 0.5}, {"B": 3.0, "C": 1.0}], k=5, weights=[1.0, 0.5])
    assert weighted["A"] == pytest.approx(1 / 6) and weighted["B"] == pytest.approx(1 / 7 + 0.5 / 6)
    assert weighted["C"] == pytest.approx(0.5 / 7)


def test_a_clause_scores_its_best_chunk_plus_a_share_of_its_second() -> None:
    chunks = [Chunk("X-1.1", "violating", "a"), Chunk("X-1.1", "violating", "b"), Chunk("X-1.1", "violating", "c"),
              Chunk("Y-1.1", "violating", "d")]
    ids, scores = np.array([3, 0, 2, 1, -1]), np.array([0.80, 0.70, 0.65, 0.60, 0.0])
    assert _best_per_clause(chunks, ids, scores) == pytest.approx({"Y-1.1": 0.80, "X-1.1": 0.70})
    both = _best_per_clause(chunks, ids, scores, second=0.5)
    assert both == pytest.approx({"Y-1.1": 0.80, "X-1.1": 0.70 + 0.5 * 0.65})  # two near examples beat one


def test_index_persists_with_manifest_and_reembeds_only_changes(corpus_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "policy_corpus"
    shutil.copytree(corpus_dir, root)
    emb = get_embedder(backend="onnx", cache_dir=tmp_path / "models")
    corpus = load_corpus(root)
    _idx, rep = PolicyIndex.load_or_build(corpus, emb, tmp_path / "index")
    assert rep.rebuilt and rep.n_embedded == rep.n_chunks
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["corpus_version"] == corpus.version and manifest["dimension"] == 384 and manifest["built_at"]
    assert (tmp_path / "index" / "dense.faiss").exists()
    _, rep2 = PolicyIndex.load_or_build(corpus, emb, tmp_path / "index")
    assert not rep2.rebuilt and rep2.n_embedded == 0
    # edit one clause's rule: the version changes and only that clause's chunk is re-embedded
    f = root / "privacy.md"
    text = f.read_text()
    f.write_text(text.replace("**Rule:** ", "**Rule:** (Revised.) ", 1))
    corpus2 = load_corpus(root)
    assert corpus2.version != corpus.version
    idx2, rep3 = PolicyIndex.load_or_build(corpus2, emb, tmp_path / "index")
    assert rep3.rebuilt and rep3.n_embedded == 1 and rep3.n_reused == rep3.n_chunks - 1
    assert idx2.manifest["corpus_version"] == corpus2.version


@pytest.mark.parametrize("method", ["bm25", "dense", "hybrid"])
def test_search_finds_the_governing_clause(runtime, method: str) -> None:  # type: ignore[no-untyped-def]
    hits = runtime.index.search("someone shared my home address and told people to visit me", k=5, method=method)
    assert len(hits) == 5 and hits == sorted(hits, key=lambda h: -h.score)
    assert any(h.clause_id.startswith("PRV-") for h in hits[:3])
    areas = runtime.index.search("selling pills, dm for the menu", k=3, areas={"illicit"})
    assert all(h.area == "illicit" for h in areas)


def test_an_area_far_from_the_query_still_gets_its_best_clauses(runtime) -> None:  # type: ignore[no-untyped-def]
    # A gaming clip's text is nowhere near the spam or privacy clauses, but the fast path asks for a flagged label's
    # best clause within its area: restricting to an area must rank that area's clauses, not filter an overall top list.
    query = "gg that last round was insane, clutch with the sniper"
    index = runtime.index
    top64 = {**index.dense_ranking(index.embedder.encode([query])[0]), **index.bm25_ranking(query)}  # SEARCH_DEPTH chunks each
    areas = sorted({c.area for c in runtime.corpus.active})
    sparse = [a for a in areas if sum(1 for cid in top64 if runtime.corpus.clauses[cid].area == a) < 3]
    assert sparse, "the query no longer leaves any area out of the top 64 chunks: pick a more off-topic one"
    for area in areas:
        hits = index.search(query, k=3, areas={area})
        assert len(hits) == 3 and {h.area for h in hits} == {area}, (area, sparse)
    with pytest.raises(ValueError, match="k must be at least 1"):
        runtime.index.search(query, k=0)


def test_rerank_is_refused_without_a_trained_reranker(runtime) -> None:  # type: ignore[no-untyped-def]
    from copilot.errors import ComponentMissing

    assert runtime.index.reranker is None  # none ships: the one trained here did not beat hybrid (RESULTS.md)
    with pytest.raises(ComponentMissing, match="train-reranker"):
        runtime.index.search("doxxing", method="rerank")
    with pytest.raises(ValueError, match="unknown retrieval method"):
        runtime.index.search("doxxing", method="semantic")
    # auto falls back to hybrid when no reranker is attached
    assert runtime.index.search("doxxing", k=3) == runtime.index.search("doxxing", k=3, method="hybrid")


def test_reranker_pairs_come_from_the_corpus_with_hard_negatives(runtime) -> None:  # type: ignore[no-untyped-def]
    from copilot.retrieval.rerank import clause_passage, training_pairs

    corpus = runtime.corpus
    pairs = training_pairs(corpus, runtime.index, negatives=2)
    passages = {clause_passage(corpus, c.id): c.id for c in corpus.active}
    positives = {(q, passages[p]) for q, p, y in pairs if y == 1.0}
    negatives = [(q, passages[p]) for q, p, y in pairs if y == 0.0]
    assert len(positives) >= len(corpus.active)  # every clause summary at least, plus the examples
    gold = dict(positives)
    assert all(cid != gold[q] for q, cid in negatives)  # a negative is never the query's own clause
    # hard negatives: far more often from the gold clause's own area (the confusable neighbours) than random clauses are
    same_area = sum(corpus.clauses[cid].area == corpus.clauses[gold[q]].area for q, cid in negatives)
    sizes = Counter(c.area for c in corpus.active)
    chance = sum((n / len(corpus.active)) ** 2 for n in sizes.values())
    assert same_area / len(negatives) > 3 * chance  # chance ~0.09; measured 0.29 with corpus 1.1.0
    # retrieval queries never enter training
    from eval.retrieval_eval import load_queries

    assert not {q.query for q in load_queries()} & {q for q, _, _ in pairs}


def test_retrieval_eval_keeps_the_second_annotators_clauses_out_of_the_headline(runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from eval.retrieval_eval import QUERIES, Query, evaluate, inactive_clauses, load_queries, markdown

    text = "i know where you live and i'll be waiting outside your door tonight"
    ranked = [h.clause_id for h in runtime.index.search(text, k=10, method="hybrid")]
    absent = next(c.id for c in runtime.corpus.active if c.id not in ranked)
    area = runtime.corpus.clauses[absent].area
    q = Query("t-1", area, "case", text, gold=[absent], also=[ranked[0]])
    results = evaluate(runtime.index, [q], ("hybrid",))
    r = results["hybrid"]
    # the writer's gold alone decides every headline figure; the second annotator's clause only the side figure
    assert r["overall"]["recall@5"] == r["by_area"][area]["recall@5"] == r["by_kind"]["case"]["recall@5"] == 0.0
    assert r["misses"] == ["t-1"] and r["overall_either_annotator"]["recall@1"] == 1.0
    assert "| hybrid | 1.0 | 1.0 | 1.0 |" in markdown(results)
    with pytest.raises(ValueError, match=r"t-2 also=NOPE-1\.1"):
        evaluate(runtime.index, [Query("t-2", "hate", "case", text, gold=[absent], also=["NOPE-1.1"])], ("hybrid",))
    (tmp_path / "q.jsonl").write_text('{"id": "x", "area": "hate", "kind": "case", "query": "q", "gold": ["HAT-1.1"], "also": "HAR-2.1"}\n')
    with pytest.raises(ValueError, match=r"q\.jsonl:1"):
        load_queries(tmp_path)
    # the shipped queries: a second annotator's clause is active, never repeats the gold, and look-alikes only gain
    # allowances (the annotator's brief)
    annotated = {r["id"]: r for r in map(json.loads, (QUERIES.parent / "second_annotator.jsonl").read_text().splitlines())}
    queries = load_queries()
    assert not inactive_clauses(runtime.corpus, queries)
    for query in queries:
        row = annotated[query.id]  # every query was annotated; `also` is what it added, unless set aside as weakest
        assert query.also == (row["add"] if row.get("applied") else []), query.id
        assert not set(query.also) & set(query.gold), query.id
        if query.kind == "lookalike":
            assert all(runtime.corpus.clauses[c].kind == "allowance" for c in query.also), query.id


def test_onnx_embedder_gives_sentence_transformers_vectors_and_is_exported_once(tmp_path: Path) -> None:
    onnx = Embedder(backend="onnx", cache_dir=tmp_path)
    torch_ = Embedder(backend="torch")
    assert onnx.backend == "onnx-fp32" and torch_.backend == "torch"
    assert onnx.model_id == torch_.model_id  # an index built by either serves both
    files = sorted(p.name for p in (tmp_path / "embedder-onnx").iterdir())
    assert len(files) == 2 and files[0].endswith(".lock") and files[1].endswith(".onnx"), files  # no temporary left
    graph = tmp_path / "embedder-onnx" / files[1]
    texts = ["", "ok", "lol ur dead meat after school 🔪", "¿dónde está la estación?", "How do I kill a Python process?",
             " ".join(["a very long transcript about the match and the weather."] * 60)]  # past the 256-token cut
    for batch in (64, 2):  # padding inside a pass must not leak into the mean
        cos = (onnx.encode(texts, batch_size=batch) * torch_.encode(texts)).sum(1)
        assert cos.min() > 0.9999, cos
    assert onnx.encode([]).shape == (0, 384)
    mtime = graph.stat().st_mtime_ns
    again = Embedder(backend="onnx", cache_dir=tmp_path)
    assert again.backend == "onnx-fp32" and graph.stat().st_mtime_ns == mtime  # reused, not re-exported


def _export_in_child(cache: str, out) -> None:  # type: ignore[no-untyped-def]
    try:
        e = Embedder(backend="onnx", cache_dir=Path(cache))
        out.put((e.backend, e.encode(["same text"]).tolist()))
    except Exception as exc:  # reported to the parent, which fails the test with it
        out.put((f"error: {exc}", None))


def test_two_processes_exporting_at_once_both_get_the_onnx_backend(tmp_path: Path) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_export_in_child, args=(str(tmp_path), out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [r[0] for r in results] == ["onnx-fp32", "onnx-fp32"], results
    assert results[0][1] == results[1][1]
    assert len(list((tmp_path / "embedder-onnx").glob("*.onnx"))) == 1


def test_a_folder_saved_by_current_sentence_transformers_also_runs_on_onnx(tmp_path: Path) -> None:
    """`copilot index finetune-embedder` saves with today's sentence-transformers (new pooling config format)."""
    saved = tmp_path / "saved-model"
    Embedder(backend="torch").st.save(str(saved))
    e = Embedder(saved, backend="onnx", cache_dir=tmp_path / "cache")
    assert e.backend == "onnx-fp32" and e.max_len == 256


def test_damaged_onnx_cache_is_exported_again_and_a_pooling_the_export_lacks_falls_back(tmp_path: Path) -> None:
    Embedder(backend="onnx", cache_dir=tmp_path)
    (graph,) = (tmp_path / "embedder-onnx").glob("*.onnx")
    graph.write_bytes(b"not an onnx graph")
    again = Embedder(backend="auto", cache_dir=tmp_path)
    assert again.backend == "onnx-fp32" and again.encode(["still works"]).shape == (1, 384)
    assert (tmp_path / "embedder-onnx" / (graph.stem + ".bad")).exists()  # set aside for a look, not silently lost
    # a pooling the export does not compute (CLS token): auto says why and uses torch; onnx refuses clearly
    other = tmp_path / "other"
    Embedder(backend="torch").st.save(str(other))
    pooling = other / "1_Pooling" / "config.json"
    cfg = json.loads(pooling.read_text())
    pooling.write_text(json.dumps({**cfg, "pooling_mode": "cls", "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    with pytest.raises(ComponentMissing, match="mean Pooling"):
        Embedder(other, backend="onnx", cache_dir=tmp_path)
    fallback = Embedder(other, backend="auto", cache_dir=tmp_path)
    assert fallback.backend == "torch" and "mean Pooling" in (fallback.onnx_problem or "")


def test_an_encoder_the_fusion_does_not_know_runs_on_an_unfused_graph_with_the_same_vectors(tmp_path: Path) -> None:
    """mpnet (the opt-in base, `make embedder-mpnet`) takes this path; MiniLM forced through it tests it here."""
    unfused = Embedder(backend="onnx", cache_dir=tmp_path, fuse=False)
    fused = Embedder(backend="onnx", cache_dir=tmp_path)
    assert (unfused.backend, fused.backend) == ("onnx-fp32-unfused", "onnx-fp32")
    graphs = list((tmp_path / "embedder-onnx").glob("*.onnx"))
    assert len(graphs) == 2  # cached apart: neither graph serves the other
    import onnx

    ops = {g: {n.op_type for n in onnx.load(str(g)).graph.node} for g in graphs}
    assert sorted("Attention" in o for o in ops.values()) == [False, True], ops  # the unfused one really is unfused
    texts = ["ok", "lol ur dead meat after school 🔪", "How do I kill a Python process?", "is quoting a slur to report it allowed?"]
    cos = (unfused.encode(texts, batch_size=2) * Embedder(backend="torch").encode(texts)).sum(1)
    assert cos.min() > 0.9999, cos


@pytest.mark.slow
def test_int8_embedder_keeps_outlier_channels_in_fp32_and_has_its_own_index(corpus: Corpus, tmp_path: Path) -> None:
    """`COPILOT_EMBEDDER_BACKEND=onnx-int8`, the fast path for the opt-in mpnet (benchmarks/RESULTS.md, "Session 14")."""
    from copilot import onnx_graph
    from copilot.retrieval.embedder import _CALIBRATION

    int8 = Embedder(backend="onnx-int8", cache_dir=tmp_path)
    fp32 = Embedder(backend="onnx", cache_dir=tmp_path)
    assert int8.backend == "onnx-int8" and int8.model_id.startswith(fp32.model_id.split("@")[0] + "-int8-") and int8.model_id.endswith("@384")
    texts = ["ok", "lol ur dead meat after school 🔪", "How do I kill a Python process?", "is quoting a slur to report it allowed?"]
    want = fp32.encode(texts)
    split = (int8.encode(texts) * want).sum(1)
    assert split.min() > 0.99, split
    # one text per pass: a text's vector does not depend on what it is embedded with
    assert np.array_equal(int8.encode(texts)[1:2], int8.encode(texts[1:2]))
    # an index built with fp32 vectors is re-embedded for int8, and back
    _, first = PolicyIndex.load_or_build(corpus, fp32, tmp_path / "index")
    _, rep8 = PolicyIndex.load_or_build(corpus, int8, tmp_path / "index")
    assert first.rebuilt and rep8.rebuilt and rep8.n_embedded == rep8.n_chunks
    _, back = PolicyIndex.load_or_build(corpus, fp32, tmp_path / "index")
    assert back.rebuilt and back.n_embedded == back.n_chunks

    (graph,) = [g for g in (tmp_path / "embedder-onnx").glob("*.onnx") if "DynamicQuantizeLinear" not in {n.op_type for n in _load(g).graph.node}]
    feeds = [dict(zip(("input_ids", "attention_mask"), onnx_graph.pad([i], 0), strict=True))
             for i in fp32.tokenizer(_CALIBRATION[:4], truncation=True, max_length=fp32.max_len)["input_ids"]]
    out = tmp_path / "variant.onnx"

    def cosines(**kw: float) -> np.ndarray:
        onnx_graph.quantize_int8(graph, out, feeds, **kw)
        probe = Embedder(backend="onnx", cache_dir=tmp_path)
        probe.session = onnx_graph.session(out, 1)
        return (probe.encode(texts, batch_size=1) * want).sum(1)

    # every channel on the fp32 side: the decomposition alone must give the fp32 vectors back
    assert cosines(outlier_ratio=0.0, max_outliers=10**6).min() > 0.99999
    # no channel on the fp32 side (plain per-channel int8) is measurably worse than the split
    plain = cosines(outlier_ratio=1e9)
    assert plain.mean() < split.mean() and plain.min() < split.min(), (plain, split)
    # with the defaults, the side products really stay fp32 MatMuls and the rest really is int8
    stats = onnx_graph.quantize_int8(graph, out, feeds)
    ops = {n.name: n.op_type for n in _load(out).graph.node}
    side = [name for name in ops if name.endswith("/fp32_side")]
    assert stats["inputs_split"] > 0 and len(side) == stats["fp32_side_matmuls"] > 0
    assert {ops[name] for name in side} == {"MatMul"} and "MatMulInteger" in ops.values()


def _load(path: Path):  # type: ignore[no-untyped-def]
    import onnx

    return onnx.load(str(path))


def test_a_cascade_reranks_only_the_queries_the_main_embedder_is_unsure_of(settings, runtime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from copilot.retrieval.embedder import base_embedder_path
    from copilot.runtime import Runtime

    # Two real embedders that rank differently: the shipped corpus-tuned MiniLM (main) and the packaged base MiniLM,
    # standing in for the slower mpnet a deployment would cascade to. Threshold 0 until the scores are known.
    rt = Runtime(settings.model_copy(update={"cascade_embedder_path": base_embedder_path(), "cascade_embedder_backend": "onnx",
                                             "cascade_below": 0.0}))
    idx = rt.index
    other = idx.cascade
    assert other is not None and other.embedder.model_id != idx.embedder.model_id
    assert other.manifest["chunk_keys"] == idx.manifest["chunk_keys"] and (settings.data_dir / "index-cascade" / "manifest.json").exists()

    def best(ix: PolicyIndex, text: str) -> tuple[float, list[str]]:
        ranking = ix.dense_ranking(ix.embedder.encode([text])[0])
        return max(ranking.values()), sorted(ranking, key=lambda c: -ranking[c])[:5]

    sure, unsure = "he posted my home address and phone number and told his followers to go there", "gg that last round was insane, clutch"
    (s_sure, main_sure), (s_unsure, main_unsure) = best(idx, sure), best(idx, unsure)
    _, cascade_unsure = best(other, unsure)
    assert s_unsure < s_sure and main_unsure != cascade_unsure  # else this pair cannot tell the two rankings apart
    idx.attach_cascade(other, (s_sure + s_unsure) / 2)

    n = idx.cascaded
    assert [h.clause_id for h in idx.search(sure, k=5, method="dense")] == main_sure and idx.cascaded == n
    assert [h.clause_id for h in idx.search(unsure, k=5, method="dense")] == cascade_unsure and idx.cascaded == n + 1
    # hybrid fuses the cascade's dense ranking with BM25 (the two indexes hold the same chunks)
    qv = other.embedder.encode([unsure])[0]
    fused = rrf([other.dense_ranking(qv), idx.bm25_ranking(unsure)], RRF_K, [1.0, BM25_WEIGHT])
    assert [h.clause_id for h in idx.search(unsure, k=5)] == sorted(fused, key=lambda c: -fused[c])[:5]
    assert "cascade" in next(c.detail for c in rt.readiness() if c.name == "index")

    # The fast path searches one case text overall and then per flagged area: the slow embedder runs once for it.
    calls: list[int] = []
    real = other.embedder.encode
    monkeypatch.setattr(other.embedder, "encode", lambda texts, *a, **kw: calls.append(len(texts)) or real(texts, *a, **kw))
    text = "lol this map is so laggy tonight"
    assert max(idx.dense_ranking(idx.embedder.encode([text])[0]).values()) < idx.cascade_below
    n = idx.cascaded
    for areas in (None, *({a} for a in sorted({c.area for c in idx.corpus.active}))):
        idx.search(text, k=3, areas=areas)
    # every search of the text cascaded (an area-restricted search ranks all chunks and so scores clauses higher, but
    # the decision is taken on the same top chunks), and mpnet's stand-in embedded it once
    assert calls == [1] and idx.cascaded == n + 1 + len({c.area for c in idx.corpus.active})
    idx.attach_cascade(other, idx.cascade_below)  # a re-attached cascade embeds again: cached vectors may be another model's
    idx.search(text, k=3)
    assert calls == [1, 1]

    smaller = PolicyIndex(idx.corpus, other.embedder, other.chunks[:-1], np.zeros((len(other.chunks) - 1, other.embedder.dim), np.float32),
                          {**other.manifest, "chunk_keys": other.manifest["chunk_keys"][:-1]})
    with pytest.raises(ComponentMissing, match="other chunks"):
        idx.attach_cascade(smaller, 0.5)
    with pytest.raises(ComponentMissing, match="itself"):
        idx.attach_cascade(idx, 0.5)
    assert rt.model_ids()["cascade_embedder"].startswith(other.embedder.model_id)  # stored with every suggestion


def test_a_missing_cascade_embedder_is_a_clear_error(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from copilot.runtime import Runtime

    rt = Runtime(settings.model_copy(update={"cascade_embedder_path": tmp_path / "embedder-mpnet"}))
    with pytest.raises(ComponentMissing, match="make embedder-mpnet"):
        rt.index  # noqa: B018
    assert "make embedder-mpnet" in next(c.detail for c in rt.readiness() if c.name == "index")


def test_a_case_cascades_or_not_for_all_its_searches_whatever_their_depth(runtime) -> None:  # type: ignore[no-untyped-def]
    # Geometry pinned by hand over the real chunks and a real FAISS index: clause X's best chunk sits at cosine 0.6 to the
    # query, its second chunk at 0.02, below the 64th best chunk (random vectors, ~0.07). The overall search (64 chunks)
    # scores X 0.6; an area-restricted one ranks every chunk and finds the second: 0.61. At a threshold of 0.605 the
    # case must cascade in both, or the fast path would cite from mpnet overall and from MiniLM per area.
    from copilot.retrieval.chunks import corpus_chunks

    emb, chunks = runtime.index.embedder, corpus_chunks(runtime.corpus)
    text = "a case whose best clause is a near miss"
    q = emb.encode([text])[0]
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((len(chunks), emb.dim)).astype(np.float32)
    vecs -= np.outer(vecs @ q, q)  # orthogonal to the query, then a small random cosine back in
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs = 0.999 * vecs + np.outer(rng.normal(0, 0.05, len(chunks)), q).astype(np.float32)
    x = [i for i, c in enumerate(chunks) if c.clause_id == "PRV-1.1"]
    for i, cos in zip(x, [0.6, 0.02] + [-0.5] * (len(x) - 2), strict=True):
        v = rng.standard_normal(emb.dim).astype(np.float32)
        v -= (v @ q) * q
        vecs[i] = cos * q + np.sqrt(1 - cos**2) * v / np.linalg.norm(v)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    manifest = {"chunk_keys": [c.key for c in chunks], "embedder_id": "pinned"}
    main = PolicyIndex(runtime.corpus, emb, chunks, vecs, manifest)
    assert max(main.dense_ranking(q).values()) == pytest.approx(0.6, abs=1e-3)  # 64 chunks: X's second is not among them
    assert max(main.dense_ranking(q, len(chunks)).values()) == pytest.approx(0.61, abs=1e-3)
    main.attach_cascade(PolicyIndex(runtime.corpus, emb, chunks, rng.standard_normal(vecs.shape).astype(np.float32), manifest), 0.605)
    main.search(text, k=3, query_vec=q)
    main.search(text, k=3, areas={"privacy"}, query_vec=q)
    assert (main.dense_searches, main.cascaded) == (2, 2)
