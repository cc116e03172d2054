#!/usr/bin/env bash
# Browser tests of the bundled dashboard: Debian's Chromium, driven by
# playwright-core from npm, against the real opswire binary and a real
# Alertmanager. Installs what it needs first (idempotent: skips what is
# present): Debian's chromium, nodejs (Node.js >= 18: Debian 12's 18.20 will
# do), npm, prometheus-alertmanager and a font, then the locked npm packages
# (playwright-core 1.61, the last release that runs on Node.js 18; it downloads
# no browser; uplot, whose dist files src/web/vendor/ must match byte for byte:
# tests/web/vendor.test.mjs). Saves a screenshot to test-artifacts/dashboard.png;
# UPDATE_DOCS_SCREENSHOT=1 also copies it to docs/dashboard.png.
# Env: OPSWIRE_BIN=path  test this binary (default: target/debug/opswire,
#                        built by scripts/build-bins.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }

need_apt=()
have chromium || need_apt+=(chromium)
have node || need_apt+=(nodejs)
have npm || need_apt+=(npm)
have prometheus-alertmanager || need_apt+=(prometheus-alertmanager)
have amtool || need_apt+=(prometheus-alertmanager)
# A font, so text in screenshots renders.
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
if ((${#need_apt[@]})); then
  log "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if ((node_major < 18)); then
  echo "Node.js >= 18 is required (playwright-core 1.61, node --test); found $(node --version)" >&2
  exit 1
fi
# playwright-core, ws, socket.io and uplot as locked.
if ! npm ls --depth=0 >/dev/null 2>&1; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

if [[ -z "${OPSWIRE_BIN:-}" ]]; then
  log "cargo build (as cargo test builds it: nothing to do after that stage)"
  bash scripts/build-bins.sh
fi

log "browser tests ($(chromium --version 2>/dev/null | head -n1); node $(node --version), npm $(npm --version), playwright-core $(node -p 'require("playwright-core/package.json").version'))"
mkdir -p test-artifacts
node --test --test-reporter=spec tests/web/vendor.test.mjs tests/web/dashboard.test.mjs tests/web/deflate.test.mjs tests/web/sse_gzip.test.mjs tests/web/fleet.test.mjs
echo "screenshot: $(pwd)/test-artifacts/dashboard.png"
