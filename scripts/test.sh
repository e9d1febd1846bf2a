#!/usr/bin/env bash
# Runs every check and test of actionsync. This is the README's test command and what CI
# runs (.ci/run). Needs Go (1.26+) and Node.js (20+) with npm; installs the rest itself.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "npm ci (pinned buf CLI and protoc-gen-es)"
npm ci --no-audit --no-fund --loglevel=error

step "generated code is up to date (npx buf generate)"
bash scripts/checkgenerate.sh

step "buf lint"
npx --no-install buf lint

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' | grep -v '^gen/') 2>&1 || true)
if [ -n "$unformatted" ]; then echo "gofmt would change:"; echo "$unformatted"; exit 1; fi

step "go vet"
go vet ./...

step "go test -race"
go test -race -count=1 ./...

step "fuzz request validation (briefly)"
go test -run '^$' -fuzz '^FuzzDispatchRequest$' -fuzztime "${FUZZTIME:-10s}" ./service/

step "broker fan-out benchmarks (briefly)"
go test -run '^$' -bench . -benchtime "${BENCHTIME:-200x}" ./broker/memory/

step "smoke test: buf curl against a real server process"
bash scripts/smoke.sh

printf '\nall checks passed\n'
