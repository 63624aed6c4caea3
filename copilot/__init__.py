"""Moderation Copilot core library: policy corpus, retrieval, classifier, suggestion chain, storage.

Nothing in this package imports from `api` or `eval` (checked by import-linter in the test command).
"""

__version__ = "0.1.0"
