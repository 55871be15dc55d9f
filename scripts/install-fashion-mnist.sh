#!/usr/bin/env bash
# Fashion-MNIST (MIT) ships as a Debian package: install it once, then copy its four files into
# data/fashion-mnist/, the raw-data directory that data.dvc tracks (byte-identical, so
# `dvc status` agrees with the committed data.dvc).
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
dest="$(dirname "$0")/../data/fashion-mnist"
[ -f "$dir/train-images-idx3-ubyte.gz" ] || "$(dirname "$0")/apt-install.sh" dataset-fashion-mnist
test -f "$dir/train-images-idx3-ubyte.gz"
mkdir -p "$dest"
for f in "$dir"/*-ubyte.gz; do
  [ -f "$dest/$(basename "$f")" ] || cp -p "$f" "$dest/"
done
