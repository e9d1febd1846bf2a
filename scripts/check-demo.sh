#!/usr/bin/env bash
# Rebuilds the demo (scripts/build-demo.sh) and fails if that changes web/demo/dist: the
# bundle is committed and embedded in the server binary, so it must match its sources.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-demo.sh
if ! git diff --exit-code --stat -- web/demo/dist || [ -n "$(git status --porcelain -- web/demo/dist)" ]; then
  echo "web/demo/dist is out of date: run 'bash scripts/build-demo.sh' (npm run build:demo) and commit the result" >&2
  git status --porcelain -- web/demo/dist >&2
  exit 1
fi
echo "web/demo/dist is up to date"
