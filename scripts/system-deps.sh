#!/usr/bin/env bash
# Install the Debian packages the service and the test suite use, when missing (PostgreSQL and Chromium for tests;
# ffmpeg and Tesseract for media cases; espeak-ng and DejaVu fonts to make test clips). Idempotent; needs root (as on CI and dev machines here).
set -euo pipefail
# Usage: scripts/system-deps.sh [run|test]   (run: only what the service needs; test, the default: everything)
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v tesseract >/dev/null || need+=(tesseract-ocr tesseract-ocr-eng)
if [ "${1:-test}" = test ]; then
  command -v chromium >/dev/null || need+=(chromium)
  command -v pg_ctlcluster >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v espeak-ng >/dev/null || need+=(espeak-ng)
  [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf ] || need+=(fonts-dejavu-core)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "warning: missing Debian packages ${need[*]} (run as root or install them); tests that need them will be skipped" >&2
  exit 0
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${need[@]}" >/dev/null
