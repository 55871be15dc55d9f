"""What a finished local run says: its headline numbers (``summary.json``) and their text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dyn_adapter.artifacts import CARD_FILE, PLOTS_DIR
from dyn_adapter.reporting import fraction, points

SUMMARY_FILES = {"demo": "summary.json", "vtab": "vtab-summary.json"}


def summarize(
    evaluation_dir: Path, registration_dir: Path, seconds: float, tracking_uri: str
) -> dict[str, Any]:
    """Headline numbers of a finished run, from its evaluation and registration outputs."""
    from dyn_adapter.artifacts import REGISTRATION_FILE, Evaluation, read_json
    from dyn_adapter.evaluation_report import as_json

    reg = read_json(registration_dir / REGISTRATION_FILE, "register")
    report = Evaluation(evaluation_dir).report
    return {
        "kind": "demo",
        "evaluation_dir": str(evaluation_dir),
        "registration_dir": str(registration_dir),
        "seconds": round(seconds, 1),
        "exits": as_json(report.exits),
        "full_accuracy": report.full.accuracy,
        "static_petl_accuracy": report.static_petl.accuracy,
        "static_petl": as_json(report.static_petl),
        "frozen_probe_exits": as_json(report.frozen_probe.exits),
        "iso_accuracy": as_json(report.iso_accuracy),
        "half_gflops": as_json(report.half_gflops),
        "comparisons": report.comparisons,
        "risk_points": report.risk_points,
        "class_shift": report.class_shift,
        "registered": {k: reg.get(k) for k in ("name", "version", "aliases", "reason")},
        "tracking_uri": tracking_uri,
        "mlflow_ui": _ui(tracking_uri, reg.get("experiment_id"), reg.get("run_id")),
    }


def _ui(tracking_uri: str, experiment_id: str | None, run_id: str | None) -> str | None:
    """Where to see the pipeline's run: the server's page, or for a file store the page that
    ``mlflow ui`` serves once started on it."""
    from dyn_adapter.mlops.names import LOCAL_UI, ui_url

    if not experiment_id:
        return None
    if tracking_uri.startswith(("http://", "https://")):
        return ui_url(tracking_uri, experiment_id, run_id)
    return (
        f"`mlflow ui --backend-store-uri {tracking_uri}`, then "
        f"{ui_url(LOCAL_UI, experiment_id, run_id)}"
    )


def summarize_vtab(table_dir: Path, seconds: float, tracking_uri: str) -> dict[str, Any]:
    """Headline numbers of a finished VTAB run, from its table."""
    from dyn_adapter.artifacts import VTAB_MARKDOWN, VTAB_TABLE, read_json

    return {
        "kind": "vtab",
        "table_dir": str(table_dir),
        "seconds": round(seconds, 1),
        **read_json(table_dir / VTAB_TABLE, "vtab"),
        "markdown": (table_dir / VTAB_MARKDOWN).read_text(),
        "tracking_uri": tracking_uri,
    }


def format_summary(s: dict[str, Any]) -> str:
    if s.get("kind") == "vtab":
        return "\n".join(
            [
                f"VTAB pipeline finished in {s['seconds'] / 60:.1f} min "
                f"({len(s['tasks'])} tasks; table in {s['table_dir']})",
                s["markdown"].rstrip(),
                f"MLflow: {s['tracking_uri']}",
                f"full task logs: {s['log']}",
            ]
        )
    iso = s["iso_accuracy"]
    lines = [
        f"pipeline finished in {s['seconds'] / 60:.1f} min",
        "test accuracy per exit: "
        + ", ".join(
            f"exit {k} (block {e['block']}): {e['accuracy']:.4f} "
            f"({e['gflops_cumulative']:.3f} GFLOPs)"
            for k, e in enumerate(s["exits"])
        ),
    ]
    if s.get("frozen_probe_exits"):
        lines.append(
            "frozen-probe baseline, test accuracy per exit: "
            + ", ".join(f"{e['accuracy']:.4f}" for e in s["frozen_probe_exits"])
        )
    lines.append(f"static PETL baseline, test accuracy: {_with_interval(s['static_petl'])}")
    if iso["gflops_ratio"] is not None:
        lines.append(
            f"iso-accuracy point (budget chosen on validation), test accuracy: "
            f"{_with_interval(iso)} at "
            f"{iso['gflops_ratio']:.3f} of the full GFLOPs ({1 - iso['gflops_ratio']:.1%} saved; "
            f"budget {iso['budget']:g})"
        )
    else:
        lines.append("iso-accuracy: no searched budget kept the reference validation accuracy")
    half = s.get("half_gflops") or {}
    if half.get("budget") is not None:
        lines.append(
            f"searched for <= 0.5 of the GFLOPs (budget {half['budget']:g}), test accuracy: "
            f"{_with_interval(half)} at {half['gflops_ratio']:.3f} measured"
        )
    for name, c in s.get("comparisons", {}).items():
        lines.append(
            f"{name.replace('_', ' ')} (test): "
            f"{points(c['difference'], c['interval'], ' points')}, "
            f"{'resolved' if c['resolved'] else 'not resolved'}"
        )
    for p in s.get("risk_points", []):
        rep = p["repeated_splits"]
        lines.append(
            f"risk-controlled {p['risk']} <= {p['epsilon']:g} (delta {p['delta']:g}): test "
            f"{p['test_risk']:.4f} at {p['gflops_ratio']:.3f} of the GFLOPs; over epsilon in "
            f"{rep['violation_frequency']:.0%} (held-out part) / "
            f"{rep['pool_violation_frequency']:.0%} (pool) of {rep['splits']} random splits"
        )
    if (s.get("class_shift") or {}).get("marked"):
        lines.append(f"note: {s['class_shift']['note']}")
    r = s["registered"]
    lines.append(
        f"registered {r['name']} version {r['version']} aliases {', '.join(r['aliases'])}: "
        f"{r['reason']}"
    )
    evaluation = Path(s["evaluation_dir"])
    lines.append(
        f"outputs: evaluation {evaluation} (model card {evaluation / CARD_FILE}, plots "
        f"{evaluation / PLOTS_DIR}/), registration {s['registration_dir']}"
    )
    lines.append(f"MLflow: {s['tracking_uri']}")
    if s.get("mlflow_ui"):
        lines.append(f"see the run: {s['mlflow_ui']}")
    if s.get("log"):
        lines.append(f"full task logs: {s['log']}")
    return "\n".join(lines)


def _with_interval(m: dict[str, Any]) -> str:
    """``0.8370 [0.8266, 0.8472]`` (the interval where the evaluation has one)."""
    return fraction(m.get("accuracy"), m.get("accuracy_interval"))
