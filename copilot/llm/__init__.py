"""LLM backends and the suggestion / Q&A chains (the full path)."""
