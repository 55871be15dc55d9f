#!/usr/bin/env bash
# Install a Debian package that ships data, once: apt-install.sh PACKAGE FILE DESCRIPTION
# (FILE: a file the package installs; present means installed).
set -euo pipefail
package=$1 file=$2 what=$3
[ -e "$file" ] && exit 0
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "installing $package needs root (or sudo)" >&2; exit 1; }
  sudo=sudo
fi
echo "installing the Debian package $package ($what)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$package" >/dev/null
test -e "$file"
