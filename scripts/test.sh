#!/usr/bin/env bash
# Runs every check and test of actionsync. This is the README's test command and what CI
# runs (.ci/run). Needs Go (1.26+) and Node.js (20+) with npm; installs the rest itself
# (npm packages with npm ci; Debian's chromium with apt-get, as root or with sudo, if no
# chromium is on the PATH and CHROMIUM does not name one).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "npm ci (pinned buf CLI and protoc-gen-es)"
npm ci --no-audit --no-fund --loglevel=error

step "generated code is up to date (npx buf generate)"
bash scripts/checkgenerate.sh

step "buf lint"
npx --no-install buf lint

step "buf breaking against the last release's contract (proto/releases/)"
last_release=$(ls proto/releases/*.binpb | sort -V | tail -1)
npx --no-install buf breaking --against "$last_release"

step "the embedded demo bundle is up to date (esbuild)"
bash scripts/check-demo.sh

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' | grep -v '^gen/') 2>&1 || true)
if [ -n "$unformatted" ]; then echo "gofmt would change:"; echo "$unformatted"; exit 1; fi

step "go vet"
go vet ./...

step "go test -race"
go test -race -count=1 ./...

step "stress suite, short form: every scenario for ${STRESS_DURATION:-8s}, a new seed each run (docs/reliability.md)"
STRESS=1 STRESS_DURATION="${STRESS_DURATION:-8s}" go test -count=1 -v -timeout 10m -run Stress ./stress/ 2>&1 |
  grep -v -E '^=== (RUN|PAUSE|CONT)'
test "${PIPESTATUS[0]}" = 0

step "TypeScript: tsc --noEmit"
npx --no-install tsc --noEmit -p tsconfig.json

step "TypeScript: middleware and demo tests (node:test, real server processes)"
node --import tsx --test web/redux/src/*.test.ts web/demo/src/*.test.ts

step "the npm package: pack contents, size budget, a fresh project installing the tarball (scripts/check-package.sh)"
bash scripts/check-package.sh

step "fuzz request validation (briefly)"
go test -run '^$' -fuzz '^FuzzDispatchRequest$' -fuzztime "${FUZZTIME:-10s}" ./service/

step "broker benchmarks (briefly): fan-out; JetStream: two nodes over 10,000 channels, loading a channel of 10,000 actions"
go test -run '^$' -bench . -benchtime "${BENCHTIME:-200x}" ./broker/memory/
go test -run '^$' -bench . -benchtime "${JS_BENCHTIME:-3x}" ./broker/jetstream/

step "performance regression check: ratios of costs measured in the same run (bench/regress)"
go test -count=1 -v -run '^TestRegression' ./bench/regress/ 2>&1 | grep -E 'ratio|^(---|ok|FAIL|PASS)'
test "${PIPESTATUS[0]}" = 0

step "smoke test: buf curl against a real server process"
bash scripts/smoke.sh

if ! command -v chromium >/dev/null 2>&1 && [ -z "${CHROMIUM:-}" ]; then
  step "installing Debian chromium for the browser tests"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium
fi

step "browser end-to-end tests (playwright-core + Debian chromium, real server processes)"
node --import tsx --test web/e2e/*.test.ts

printf '\nall checks passed\n'
