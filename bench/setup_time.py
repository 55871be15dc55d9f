"""How long ``make setup`` takes on this machine: cold, warm and with nothing to do.

Clones the repository (``--ref``, default HEAD) into a temporary directory and times, there:

- ``cold``: ``make setup`` with empty package caches (a fresh ``UV_CACHE_DIR`` and
  ``PIP_CACHE_DIR``) and no converted weights (a fresh ``DYN_ADAPTER_CACHE``); with
  ``--remove-debs`` (root) the Debian packages setup installs are removed first, so their
  ``apt-get install`` counts too, as on a fresh machine;
- ``warm``: the venv deleted and ``make setup`` again, the caches kept (a second checkout);
- ``noop``: ``make setup`` once more, everything in place.

Runs with the system Python (no venv exists yet) and writes ``bench/results/setup.json``
with the machine and its load average, since other work on the cores slows the install.

    python3 bench/setup_time.py --remove-debs
    python3 bench/setup_time.py --ref <older commit> --out bench/results/setup-before.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEBS = ("dataset-fashion-mnist", "openclipart-png")


def timed(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "a") as out:
        done = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        sys.exit(f"`{' '.join(command)}` failed (exit {done.returncode}):\n{tail}")
    return time.perf_counter() - started


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", default="HEAD", help="commit to clone (default: HEAD)")
    parser.add_argument("--remove-debs", action="store_true", help=f"apt-get remove {DEBS} first")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/setup.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="setup-time-") as tmp:
        work = Path(tmp)
        clone = work / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "checkout", "-q", args.ref], cwd=clone, check=True)
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True
        ).stdout.strip()
        env = {
            **os.environ,
            "UV_CACHE_DIR": str(work / "uv-cache"),
            "PIP_CACHE_DIR": str(work / "pip-cache"),
            "DYN_ADAPTER_CACHE": str(work / "weights"),
        }
        if args.remove_debs:
            subprocess.run(
                ["apt-get", "remove", "-y", "-qq", *DEBS], check=True, stdout=subprocess.DEVNULL
            )
        log = work / "setup.log"
        load = os.getloadavg()[0]
        seconds = {"cold": timed(["make", "setup"], clone, env, log)}
        shutil.rmtree(clone / ".venv")
        seconds["warm"] = timed(["make", "setup"], clone, env, log)
        seconds["noop"] = timed(["make", "setup"], clone, env, log)
        tail = log.read_text().splitlines()[-5:]

    result = {
        "what": "make setup in a fresh clone",
        "commit": commit,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "debs_installed_by_setup": args.remove_debs,
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m_at_start": round(load, 2),
        },
        "log_tail": tail,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    tmp_out.replace(args.out)
    print(json.dumps(result["seconds"]), "->", args.out)


if __name__ == "__main__":
    main()
