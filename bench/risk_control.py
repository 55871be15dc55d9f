"""Does the risk-control guarantee hold beyond the demo? Repeated calibration/test splits of a
task's test split.

VTAB-1k tasks leave no unused training images to calibrate on, so this takes a trained task's
test split, runs the model over it once (cached exit scores), and then, ``--splits`` times,
draws a random ``--calibration-fraction`` of it to certify each level with Learn then Test
(``dyn_adapter.policies.risk``) and measures the realised disagreement with the full model on
the rest. Certified for a window of the rest's size (``--window test``, the default), the
guarantee says that realised risk exceeds epsilon in at most about ``delta`` of the splits;
certified for the expected risk (``--window none``), the pool's risk does. Each invocation
adds (or replaces) one row of ``--out`` per task and window::

    python bench/risk_control.py --task digits --model RUN/train-model/model/model \\
        --data RUN/prepare-data/data
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path
from typing import Any

import torch

from dyn_adapter.data.prepared import PreparedData
from dyn_adapter.evaluation.speed import cpu_name
from dyn_adapter.files import atomic_path, write_json
from dyn_adapter.inference import load_engine, split_scores
from dyn_adapter.policies import risk


def task_row(args: argparse.Namespace) -> dict[str, Any]:
    tic = time.perf_counter()
    engine = load_engine(args.model, torch.device("cpu"))
    data = PreparedData(args.data)
    scores = split_scores(engine, data, "test", 64)
    n = len(scores.labels)
    calibration = int(round(args.calibration_fraction * n))
    window = None if args.window == "none" else n - calibration
    levels = []
    for epsilon in args.epsilons:
        need = risk.min_calibration_size(epsilon, args.delta, window)
        if calibration < need:
            levels.append({"epsilon": epsilon, "skipped": f"needs {need} calibration images"})
            continue
        levels.append(
            {
                "epsilon": epsilon,
                **risk.violation_frequency(
                    scores,
                    epsilon,
                    args.delta,
                    "disagreement",
                    calibration,
                    args.splits,
                    window_images=window,
                ),
            }
        )
    return {
        "task": args.task,
        "window_images": window,
        "test_images": n,
        "delta": args.delta,
        "levels": levels,
        "seconds": time.perf_counter() - tic,
        "model": str(args.model),
        "date": datetime.date.today().isoformat(),
        "machine": f"{cpu_name()}, {torch.get_num_threads()} threads",
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| task | certified for | test images | calibration / test | epsilon | splits over "
        "epsilon: held-out part / pool | mean realised risk | max | test noise sd | mean "
        "GFLOPs ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        window = r.get("window_images")
        which = "expected risk" if window is None else f"{window} images"
        for lv in r["levels"]:
            if "skipped" in lv:
                lines.append(
                    f"| {r['task']} | {which} | {r['test_images']} | | {lv['epsilon']:g} | "
                    f"skipped: {lv['skipped']} | | | | |"
                )
                continue
            lines.append(
                f"| {r['task']} | {which} | {r['test_images']} | {lv['calibration_images']} / "
                f"{lv['test_images']} | {lv['epsilon']:g} | {lv['violation_frequency']:.2f} / "
                f"{lv['pool_violation_frequency']:.2f} of {lv['splits']} (delta {r['delta']:g} "
                f"+- {lv['standard_error']:.3f}) | "
                f"{lv['mean_realised_risk']:.4f} | {lv['max_realised_risk']:.4f} | "
                f"{lv['test_noise_sd']:.4f} | {lv['mean_gflops_ratio']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--task", required=True, help="the row's name")
    ap.add_argument("--model", required=True, help="the task's trained model directory")
    ap.add_argument("--data", required=True, help="its prepared data")
    ap.add_argument(
        "--epsilons",
        type=lambda t: [float(x) for x in t.split(",")],
        default=[0.01, 0.02, 0.05],
        help="levels (default: 0.01,0.02,0.05)",
    )
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--splits", type=int, default=100)
    ap.add_argument("--calibration-fraction", type=float, default=0.5)
    ap.add_argument(
        "--window",
        choices=["test", "none"],
        default="test",
        help="the risk certified: the realised risk of a test part's size (default), or the\n"
        "expected risk (none)",
    )
    ap.add_argument("--out", default="bench/results/risk_control.json")
    args = ap.parse_args()
    out = Path(args.out)
    previous = json.loads(out.read_text())["tasks"] if out.is_file() else []
    row = task_row(args)
    same = (row["task"], row["window_images"] is None)
    rows = [r for r in previous if (r["task"], r.get("window_images") is None) != same] + [row]
    write_json(out, {"tasks": rows})
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(rows))
    print(markdown([row]))


if __name__ == "__main__":
    main()
