#!/usr/bin/env bash
# Checks @actionsync/redux as people install it: packs it as `npm publish` would (npm pack
# runs its build: ES modules and declarations in web/redux/dist), checks the tarball's
# files and size (web/redux/tools/pack-check.ts), the library's min+gzip size against its
# budget (web/redux/tools/size.ts), then installs the tarball into a fresh temporary
# project with Redux Toolkit and connect-node from the npm registry, type-checks the
# consumer (web/redux/tools/consumer, NodeNext resolution) and runs it against a real
# actionsync server. Needs the npm registry (or a warm npm cache); nothing else online.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tmp=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "packing @actionsync/redux (npm pack runs the build)"
(cd web/redux && npm pack --json --pack-destination "$tmp" --loglevel=error >"$tmp/pack.json")
node --import tsx web/redux/tools/pack-check.ts "$tmp/pack.json"
node --import tsx web/redux/tools/size.ts
tarball=$(ls "$tmp"/actionsync-redux-*.tgz)

echo "consumer project: installing the tarball with Redux Toolkit into $tmp/consumer"
mkdir "$tmp/consumer"
cp web/redux/tools/consumer/main.ts web/redux/tools/consumer/tsconfig.json "$tmp/consumer/"
# The versions this repository pins (package.json), so the check is repeatable and the
# Connect packages agree with each other.
pins=$(node -e '
  const p = require("./package.json"), all = { ...p.dependencies, ...p.devDependencies };
  const names = ["@reduxjs/toolkit", "redux", "@connectrpc/connect", "@connectrpc/connect-web", "@connectrpc/connect-node",
    "@bufbuild/protobuf", "react", "react-redux", "@types/react", "@types/node"];
  console.log(names.map((n) => `${n}@${all[n]}`).join(" "));')
cat >"$tmp/consumer/package.json" <<JSON
{ "name": "actionsync-consumer", "private": true, "type": "module" }
JSON
# shellcheck disable=SC2086 # pins is a list of words
(cd "$tmp/consumer" && npm install --no-audit --no-fund --loglevel=error --prefer-offline "$tarball" $pins)
echo "consumer: tsc (NodeNext)"
(cd "$tmp/consumer" && "$root/node_modules/.bin/tsc" -p tsconfig.json)

echo "consumer: running against a real actionsync server"
go build -o "$tmp/actionsync" ./cmd/actionsync
"$tmp/actionsync" serve --addr 127.0.0.1:0 2>"$tmp/server.log" &
server_pid=$!
url=""
for _ in $(seq 1 200); do
  url=$(sed -n 's/.*actionsync listening.* url=\(http:[^ ]*\).*/\1/p' "$tmp/server.log" | head -1)
  [ -n "$url" ] && break
  sleep 0.1
done
if [ -z "$url" ]; then echo "the server did not start:"; cat "$tmp/server.log"; exit 1; fi
(cd "$tmp/consumer" && ACTIONSYNC_URL="$url" node out/main.js)
echo "the packed package works in a fresh project"
