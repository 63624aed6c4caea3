"""Retrieval over the policy corpus: dense (FAISS) + BM25, fused."""
