"""The stages' Markdown tables, each from the result its stage writes as JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..policies.risk import guaranteed_risk
from . import difference_cell, header, percent, points, shares

if TYPE_CHECKING:
    from ..training.config import TrainConfig


def sparsity_table(rows: list[dict[str, Any]], best: str) -> str:
    """The sparsity candidates' validation accuracy per exit, the best marked."""
    n = len(rows[0]["val_accuracy"])
    lines = header(
        "candidate",
        "forward rate",
        "backward keep",
        *(f"val acc exit {k}" for k in range(n)),
        "mean",
    )
    lines += [
        f"| {r['name']}{' (best)' if r['name'] == best else ''} | {r['forward_rate']:g} | "
        f"{r['backward_keep']:g} | "
        + " | ".join(f"{a:.4f}" for a in r["val_accuracy"])
        + f" | {r['score']:.4f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def pareto_table(rows: list[dict[str, Any]], full: float) -> str:
    """The searched budgets: validation accuracy, cost and thresholds of each policy."""
    lines = header(
        "budget", "val accuracy", "GFLOPs", "ratio", "geometric accuracy", "policy", "thresholds"
    )
    for r in rows:
        geo = f"{r['geometric']['accuracy']:.4f}" if r["geometric"] else "n/a"
        thr = ", ".join(f"{t:.3f}" for t in r["thresholds"][:-1])
        lines.append(
            f"| {r['budget']:g} | {r['accuracy']:.4f} | {r['gflops']:.3f} | "
            f"{r['gflops'] / full:.3f} | {geo} | {r['source']} | {thr} |"
        )
    return "\n".join(lines) + "\n"


def risk_table(report: dict[str, Any]) -> str:
    """The certified risk levels: threshold, empirical risk, bound and cost of each."""
    if report["skipped"]:
        return f"Risk control skipped: {report['skipped']}.\n"
    which = guaranteed_risk(report.get("window_images"))
    lines = [
        f"Certified on {report['calibration_images']} {report['split']} images, "
        f"delta {report['delta']:g}: P({which} <= epsilon) >= {1 - report['delta']:g}.",
        "",
        *header("risk", "epsilon", "certified level", "threshold", "empirical risk", "bound",
                "GFLOPs", "ratio", "exit fractions"),
    ]  # fmt: skip
    for p in report["points"]:
        fractions = shares(p["exit_fractions"])
        level = p.get("certified_level", p["epsilon"])
        lines.append(
            f"| {p['risk']} | {p['epsilon']:g} | {level:.4f} | {p['threshold']:.4f} | "
            f"{p['empirical_risk']:.4f} | {p['risk_bound']:.4f} | {p['gflops']:.3f} | "
            f"{p['gflops_ratio']:.3f} | {fractions} |"
        )
    lines += ["", f"Assumption: {report['assumption']}.", f"Method: {report['method']}."]
    return "\n".join(lines) + "\n"


def ablation_table(table: dict[str, Any], train: TrainConfig) -> str:
    """A study's table: per variant and seed, then averaged over the seeds."""
    rows = table["rows"]
    n = max(len(r["accuracy"]) for r in rows)
    static = table.get("static")
    vs_static = ["last exit − static"] if static else []
    lines = [
        f"Final-epoch {table['split']} accuracy, {table['images']} images ({train.epochs} epochs; "
        f"seeds {', '.join(map(str, table['seeds']))}; sparsity rates: forward "
        f"{train.sparsity.forward_rate:g}, backward keep {train.sparsity.backward_keep:g}). "
        f"Differences are to `{table['reference']}` with the same seed on the same images "
        "(paired bootstrap 95% interval; * resolved: the interval excludes 0 and McNemar p < 0.05)"
        + (f"; the last column, the last exit's to `{static}`'s." if static else "."),
        "",
        *header("variant", "seed", "changes", *(f"exit {k}" for k in range(n)), "mean", *vs_static),
    ]
    for r in rows:
        cells = ["—"] * (n - len(r["accuracy"]))  # the static model: its one exit is the last
        for k in range(len(r["accuracy"])):
            cell = percent(r["accuracy"][k], r["interval"][k], interval_digits=1)
            if r["vs_reference"] is not None:
                cell += f"; {_difference(r['vs_reference'][k])}"
            cells.append(cell)
        changes = ", ".join(f"{k}={v}" for k, v in r["changes"].items()) or "—"
        line = f"| {r['variant']} | {r['seed']} | {changes} | {' | '.join(cells)} | {100 * r['mean']:.2f} |"
        if static:
            d = r.get("last_vs_static")
            line += f" {_difference(d) if d else '—'} |"
        lines.append(line)
    if len(table["seeds"]) > 1:
        lines += [
            "",
            "Over the seeds: accuracy averaged over the seeds each variant ran and the "
            "difference to the reference averaged image by image over them (bootstrap 95% "
            "interval over the images; * the interval excludes 0; † resolved with the same sign "
            "under each of several seeds).",
            "",
            *header(
                "variant", "seeds", *(f"exit {k}" for k in range(n)), "mean over exits", *vs_static
            ),
        ]
        for s in table["summary"]:
            several = len(s["seeds"]) > 1
            cells = ["—"] * (n - len(s["accuracy"]))
            cells += [f"{100 * a:.2f}" for a in s["accuracy"]] + [f"{100 * s['mean']:.2f}"]
            if "averaged" in s:
                verdicts = [*s["resolved"], None]
                for k, (d, v) in enumerate(
                    zip([*s["averaged"], s["mean_difference"]], verdicts, strict=True)
                ):
                    mark = "†" if several and v in ("better", "worse") else ""
                    cells[k] += f"; {_difference(d)}{mark}"
            if static:
                d = s.get("last_vs_static")
                resolved = s.get("last_vs_static_resolved") in ("better", "worse")
                mark = "†" if several and resolved else ""
                cells.append(f"{_difference(d)}{mark}" if d else "—")
            seeds = ", ".join(map(str, s["seeds"]))
            lines.append(f"| {s['variant']} | {seeds} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def _difference(d: dict[str, Any]) -> str:
    """``+d [low, high]``, in points, starred when resolved."""
    return points(d["difference"], d["interval"]) + ("*" if d["resolved"] else "")


def vtab_table(result: dict[str, Any]) -> str:
    """The table: accuracies in % with 95% Wilson intervals; differences in points, paired,
    marked n.s. where not resolved."""
    lines = header(
        "task", "static PETL", "frozen probe (exits)", "Dyn-Adapter last exit",
        "dynamic, iso (GFLOPs ratio)", "dynamic, <= 0.5 GFLOPs (ratio)", "<= 0.5 minus static",
        "above probe at every budget",
    )  # fmt: skip
    for r in result["tasks"]:
        iso_ratio = r["dynamic_gflops_ratio"]
        half_ratio = r.get("half_gflops_ratio")
        probe = " / ".join(percent(a) for a in r.get("frozen_probe_exits") or []) or "n/a"
        above = r.get("above_frozen_probe_resolved")
        margin = r.get("min_margin_over_frozen_probe")
        lines.append(
            f"| {r['task']} | {percent(r.get('static_petl_accuracy'), r.get('static_petl_interval'))} "
            f"| {probe} | {percent(r['accuracy'], r.get('accuracy_interval'))} "
            f"| {percent(r['dynamic_accuracy'], r.get('dynamic_interval'))} "
            f"({'n/a' if iso_ratio is None else f'{iso_ratio:.3f}'}) "
            f"| {percent(r.get('half_gflops_accuracy'), r.get('half_gflops_interval'))} "
            f"({'n/a' if half_ratio is None else f'{half_ratio:.3f}'}) "
            f"| {difference_cell(r.get('half_gflops_vs_static_petl'))} "
            f"| {'n/a' if above is None else ('yes' if above else 'not resolved')}"
            f"{'' if margin is None else f' (min {100 * margin:+.2f})'} |"
        )
    lines.append("")
    for g, v in result["group_means"].items():
        lines.append(f"- {g} mean: {percent(v)}")
    lines.append(f"- mean of group means: {percent(result['mean_of_group_means'])}")
    lines.append(f"- mean of tasks: {percent(result['mean_of_tasks'])}")
    for key, label in (
        ("mean_static_petl", "static PETL"),
        ("mean_half_gflops_accuracy", "dynamic at <= 0.5 GFLOPs"),
    ):
        if result.get(key) is not None:
            lines.append(f"- mean of tasks, {label}: {percent(result[key])}")
    return "\n".join(lines) + "\n"
