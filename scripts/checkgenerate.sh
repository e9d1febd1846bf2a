#!/usr/bin/env bash
# Regenerates gen/ and web/redux/src/gen/ from proto/ and fails if that changes anything:
# generated code is committed and must match the contract.
set -euo pipefail
cd "$(dirname "$0")/.."
npx --no-install buf generate
if ! git diff --exit-code --stat -- gen web/redux/src/gen || [ -n "$(git status --porcelain -- gen web/redux/src/gen)" ]; then
  echo "generated code is out of date: run 'npx buf generate' and commit the result" >&2
  git status --porcelain -- gen web/redux/src/gen >&2
  exit 1
fi
echo "generated code is up to date"
