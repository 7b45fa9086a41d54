#!/usr/bin/env bash
# Chromium for the web SDK's browser tests (tests/e2e/browser.rs): Debian's `chromium`
# package, installed when missing (`make test` runs this). playwright-core (an npm dev
# dependency of sdk/web, installed by `make sdk`) drives it; Playwright's own browser download
# (`npx playwright install`) is never used: it fetches from hosts outside the package
# registries, which CI machines cannot reach. CHROMIUM names another binary.
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
log() { printf '\033[1m[browser]\033[0m %s\n' "$*" >&2; }

if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$CHROMIUM" != /usr/bin/chromium ]; then
  log "CHROMIUM=$CHROMIUM is not an executable"
  exit 1
fi
"$(dirname "$0")/install-package.sh" chromium "the web SDK's browser tests"
"$CHROMIUM" --version >&2
