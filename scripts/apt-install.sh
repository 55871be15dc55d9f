#!/usr/bin/env bash
# Install Debian packages (as root, or through sudo): apt-install.sh PACKAGE...
# Callers check first whether they are needed.
set -euo pipefail
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "installing $* needs root (or sudo)" >&2; exit 1; }
  sudo=sudo
fi
echo "installing the Debian packages $*"
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
