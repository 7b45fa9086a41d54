#!/usr/bin/env bash
# Installs a Debian package a test needs, from the machine's package sources:
#   scripts/install-package.sh <package> <what it is for>
# As root it runs apt-get (refreshing the package lists only if the first try fails); as
# another user it says the command to run and fails. Only packages' binaries are wanted: no
# service of theirs is started or configured here.
set -euo pipefail
package=$1
purpose=$2
log() { printf '\033[1m[install]\033[0m %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  log "$package is not installed ($purpose needs it): sudo apt-get install -y $package"
  exit 1
fi
log "installing $package (Debian package) for $purpose"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "$package" >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -qq "$package" >/dev/null; }
