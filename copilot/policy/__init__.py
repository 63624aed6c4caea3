"""The policy corpus: loading, validation, versioning."""

from copilot.policy.corpus import Corpus, load_corpus

__all__ = ["Corpus", "load_corpus"]
