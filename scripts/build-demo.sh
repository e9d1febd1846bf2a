#!/usr/bin/env bash
# Builds the demo app into web/demo/dist: one minified ES module bundle (React, Redux
# Toolkit, @actionsync/redux and the board) plus index.html, style.css and the service
# worker that makes the page load offline (sw.js, registered by register-sw.js). The output
# depends only on the sources and the pinned esbuild, so rebuilding an unchanged tree
# changes nothing (scripts/check-demo.sh relies on it). web/demo/dist is committed and
# embedded in the server binary (package web/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
out=web/demo/dist
rm -rf "$out"
mkdir -p "$out"
npx --no-install esbuild web/demo/src/main.tsx --bundle --format=esm --platform=browser --target=es2022 \
  --jsx=automatic --minify --legal-comments=none --log-level=warning --outfile="$out/app.js"
cp web/demo/index.html web/demo/style.css web/demo/sw.js web/demo/register-sw.js "$out/"
echo "built $out: $(ls "$out" | tr '\n' ' ')"
