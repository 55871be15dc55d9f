#!/usr/bin/env bash
# What building and testing the project image needs on the host, from Debian's packages:
# docker.io (the engine and a 20.10 CLI with BuildKit built in), mmdebstrap (a local stand-in
# for the python:3.11-slim-bookworm base where no image registry can be reached) and
# docker-registry (the distribution registry, for the push/compile-by-digest test).
set -euo pipefail
missing=()
[ -x /usr/sbin/dockerd ] || command -v dockerd >/dev/null || missing+=(docker.io)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v docker-registry >/dev/null || missing+=(docker-registry)
[ ${#missing[@]} -eq 0 ] && exit 0
exec "$(dirname "$0")/apt-install.sh" "${missing[@]}"
