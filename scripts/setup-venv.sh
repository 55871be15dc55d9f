#!/usr/bin/env bash
# The project's venv, exactly as requirements/lock.txt pins it: setup-venv.sh PYTHON VENV
# uv installs the lock as it is (nothing to resolve, downloads in parallel, files linked from
# its cache); pip only bootstraps uv itself, at the version the lock pins.
set -euo pipefail
python=$1
venv=$2
lock=requirements/lock.txt

# uv reads no pip configuration: a machine's package mirrors (pip's extra-index-url) are passed
# on and, for each pinned version, tried before PyPI.
if [ -z "${UV_EXTRA_INDEX_URL:-}" ]; then
  mirrors=${PIP_EXTRA_INDEX_URL:-$("$python" -m pip config get global.extra-index-url 2>/dev/null || true)}
  if [ -n "$mirrors" ]; then export UV_EXTRA_INDEX_URL=$mirrors; fi
fi
export UV_INDEX_STRATEGY=${UV_INDEX_STRATEGY:-unsafe-best-match}

# A download cut off midway is retried, twice, before setup gives up.
retry() {
  for try in 1 2 3; do
    "$@" && return 0
    if [ "$try" = 3 ]; then return 1; fi
    echo "$1 failed (try $try of 3): retrying in 10 s" >&2
    sleep 10
  done
}

"$python" -m venv "$venv"
retry "$venv/bin/pip" install --quiet --disable-pip-version-check "$(grep -oE '^uv==[^ ;]+' "$lock")"
uv=("$venv/bin/uv" pip)
py=(--python "$venv/bin/python")
retry "${uv[@]}" sync --quiet "${py[@]}" "$lock"
retry "${uv[@]}" install --quiet "${py[@]}" --no-deps -r requirements/no-deps.txt
retry "${uv[@]}" install --quiet "${py[@]}" --no-deps -e .
