"""Which last-exit recipe, if any, replaces the configured one? The README's criterion, read.

Reads the ``ablate --study last-exit --split selection`` tables of several tasks (the selection
split: never test) and, for every candidate that ran every seed the reference ran on every
task, pools over the tasks what the criterion fixed before the runs asks (README, *The last
exit*): (a) its last exit minus the static model >= -0.2 points, (b) its last exit not
resolved below the reference's (``joint``), (c) its early exits, averaged over them, losing at
most 0.5 points against the reference's. Each task's number is the difference averaged over
its seeds image by image, as the ablation table gives it with a bootstrap interval; tasks have
their own images and are pooled as independent (mean over tasks, normal interval from each
task's half-width). Writes JSON and the Markdown table beside it.

    python bench/last_exit_criterion.py fashion_mnist=outputs/ablation/last-exit-selection.json \
        mnist_5k=outputs/ablation-mnist/last-exit-selection.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from dyn_adapter.files import atomic_path, write_json
from dyn_adapter.reporting import difference_cell, header
from dyn_adapter.stages.ablate import STUDIES

RESULTS = Path(__file__).parent / "results" / "last_exit_criterion.json"
# The criterion's bounds, in accuracy (fractions): fixed before the runs (README).
MIN_LAST_VS_STATIC = -0.002
MAX_EARLY_LOSS = 0.005
Z = 1.96


def pooled(per_task: list[dict[str, Any]]) -> dict[str, Any]:
    """Independent tasks' differences (each with a 95% interval): their mean and interval."""
    mean = statistics.fmean(d["difference"] for d in per_task)
    se = sum(((d["interval"][1] - d["interval"][0]) / (2 * Z)) ** 2 for d in per_task) ** 0.5
    half = Z * se / len(per_task)
    return {
        "difference": mean,
        "interval": [mean - half, mean + half],
        "resolved": not (mean - half <= 0 <= mean + half),
        "tasks": len(per_task),
    }


def _task_numbers(table: dict[str, Any], variant: str) -> dict[str, Any] | None:
    """A candidate's seed-averaged differences on one task, if it ran the reference's seeds."""
    summary = {s["variant"]: s for s in table["summary"]}
    mine, reference = summary.get(variant), summary[table["reference"]]
    if mine is None or sorted(mine["seeds"]) != sorted(reference["seeds"]):
        return None
    early = [d["difference"] for d in mine["averaged"][:-1]]
    return {
        "seeds": mine["seeds"],
        "last_vs_static": mine["last_vs_static"],
        "last_vs_reference": mine["averaged"][-1],
        "early_vs_reference": statistics.fmean(early),
    }


def read(tables: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The criterion for every candidate of the tasks' tables (a candidate missing from a task,
    or short of its seeds, is listed as incomplete)."""
    first = next(iter(tables.values()))
    reference = first["reference"]
    candidates = [v.name for v in STUDIES["last-exit"] if v.name != reference and not v.static]
    out: dict[str, Any] = {
        "reference": reference,
        "tasks": list(tables),
        # the gap the candidates are to close, read the same way
        "reference_last_vs_static": pooled(
            [
                {s["variant"]: s for s in t["summary"]}[reference]["last_vs_static"]
                for t in tables.values()
            ]
        ),  # fmt: skip
        "candidates": [],
    }
    for variant in candidates:
        per_task = {task: _task_numbers(t, variant) for task, t in tables.items()}
        row: dict[str, Any] = {"variant": variant, "per_task": per_task}
        if any(v is None for v in per_task.values()) or len(per_task) < 2:
            row["complete"] = False
            out["candidates"].append(row)
            continue
        numbers = [v for v in per_task.values() if v is not None]
        last_static = pooled([n["last_vs_static"] for n in numbers])
        last_reference = pooled([n["last_vs_reference"] for n in numbers])
        early = statistics.fmean(n["early_vs_reference"] for n in numbers)
        checks = {
            "a_last_vs_static": last_static["difference"] >= MIN_LAST_VS_STATIC,
            "b_last_not_below_reference": not (
                last_reference["resolved"] and last_reference["difference"] < 0
            ),
            "c_early_loss": early >= -MAX_EARLY_LOSS,
        }
        row |= {
            "complete": True,
            "last_vs_static": last_static,
            "last_vs_reference": last_reference,
            "early_vs_reference": early,
            "checks": checks,
            "qualifies": all(checks.values()),
        }
        out["candidates"].append(row)
    qualified = [c for c in out["candidates"] if c.get("qualifies")]
    best = max(qualified, key=lambda c: c["last_vs_static"]["difference"], default=None)
    out["winner"] = best["variant"] if best else None
    return out


def markdown(result: dict[str, Any]) -> str:
    tasks = ", ".join(result["tasks"])
    lines = [
        f"Last-exit criterion on the selection split, pooled over {tasks} (seeds averaged "
        f"first; 95% intervals; reference `{result['reference']}`).",
        "",
        *header(
            "candidate",
            "last exit − static",
            "last exit − reference",
            "early exits − reference",
            "(a) ≥ −0.2",
            "(b) not below",
            "(c) ≥ −0.5",
            "qualifies",
        ),
    ]
    yes = {True: "yes", False: "no"}
    lines.append(
        f"| {result['reference']} (reference) | "
        f"{difference_cell(result['reference_last_vs_static'])} | — | — | | | | |"
    )
    for c in result["candidates"]:
        if not c["complete"]:
            missing = [t for t, v in c["per_task"].items() if v is None]
            lines.append(
                f"| {c['variant']} | not yet run with every seed on {', '.join(missing)} "
                "| | | | | | |"
            )
            continue
        checks = c["checks"]
        lines.append(
            f"| {c['variant']} | {difference_cell(c['last_vs_static'])} | "
            f"{difference_cell(c['last_vs_reference'])} | {100 * c['early_vs_reference']:+.2f} | "
            f"{yes[checks['a_last_vs_static']]} | {yes[checks['b_last_not_below_reference']]} | "
            f"{yes[checks['c_early_loss']]} | {yes[c['qualifies']]} |"
        )
    winner = result["winner"]
    waiting = sum(not c["complete"] for c in result["candidates"])
    if winner:
        verdict = f"Winner: `{winner}`."
    elif waiting:
        verdict = f"No complete candidate qualifies so far; {waiting} still lack runs."
    else:
        verdict = "No candidate qualifies: the default stays."
    lines += ["", verdict]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "tables",
        nargs="+",
        metavar="TASK=JSON",
        help="each task's last-exit-selection.json (from dyn-adapter ablate)",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="JSON to write (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    tables: dict[str, dict[str, Any]] = {}
    for item in args.tables:
        task, sep, path = item.partition("=")
        if not sep:
            parser.error(f"{item!r}: expected TASK=path/to/last-exit-selection.json")
        table = json.loads(Path(path).read_text())
        if table.get("study") != "last-exit" or table.get("split") != "selection":
            parser.error(f"{path}: not a last-exit study on the selection split")
        tables[task] = table
    result = read(tables)
    write_json(args.out, result)
    with atomic_path(args.out.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(result))
    print(markdown(result), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
