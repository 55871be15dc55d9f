#!/usr/bin/env bash
# Fashion-MNIST (MIT) ships as a Debian package: install it once, then copy its four files into
# data/fashion-mnist/, the raw-data directory that data.dvc tracks (byte-identical, so
# `dvc status` agrees with the committed data.dvc).
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
dest="$(dirname "$0")/../data/fashion-mnist"
if [ ! -f "$dir/train-images-idx3-ubyte.gz" ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "installing dataset-fashion-mnist needs root (or sudo)" >&2; exit 1; }
    sudo=sudo
  fi
  echo "installing the Debian package dataset-fashion-mnist (31 MB)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
  test -f "$dir/train-images-idx3-ubyte.gz"
fi
mkdir -p "$dest"
for f in "$dir"/*-ubyte.gz; do
  [ -f "$dest/$(basename "$f")" ] || cp -p "$f" "$dest/"
done
