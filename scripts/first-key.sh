#!/usr/bin/env bash
# On first start, create an admin API key and print it once; later starts say where the key was shown.
set -euo pipefail
copilot=$1
marker=${COPILOT_DATA_DIR:-var}/.admin-key-created
if [ -f "$marker" ]; then
  echo "An admin key was created on first start ($(cat "$marker")). Create more with: $copilot keys create --role moderator"
  exit 0
fi
key=$($copilot keys create --role admin --name first-admin)
mkdir -p "$(dirname "$marker")"
date -u +%FT%TZ > "$marker"
cat <<MSG

  Admin API key (shown once, stored only as a hash):  $key
  Console: http://127.0.0.1:8000/   (paste the key into the console's key box)
  API:     curl -H "Authorization: Bearer $key" http://127.0.0.1:8000/v1/policy/search?q=doxxing

MSG
