"""The ``register`` stage: the searched model as an MLflow pyfunc, a registry version, the gate.

Every registration becomes a new model version with the alias ``candidate``; ``champion``
moves to it only when the gate passes (:mod:`dyn_adapter.mlops.registry`). Writes
``registration.json`` (the version, its aliases, the gate's reason), the pyfunc's
``preprocess.json`` and model code, and the manifest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..artifacts import (
    MANIFEST_FILE,
    MODEL_CODE_FILE,
    PREPROCESS_FILE,
    REGISTRATION_FILE,
    Evaluation,
    RiskPoints,
    Thresholds,
)
from ..config import to_dict
from ..data.prepared import PreparedData
from ..errors import ConfigError
from ..files import sha256_file, write_json
from ..manifest import stage_manifest
from ..models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, read_config
from ..params import Params


def default_pipeline_run_id(
    model_dir: str | Path, search_dir: str | Path, evaluate_dir: str | Path
) -> str:
    """A run id that names these inputs: a hash of the weights, thresholds and test metrics.

    The same inputs give the same id, so registering them twice reuses the version.
    """
    h = hashlib.sha256()
    for path in (
        Path(model_dir) / WEIGHTS_FILE,
        Path(model_dir) / CONFIG_FILE,
        Thresholds(search_dir).path,
        Evaluation(evaluate_dir).metrics_path,
    ):
        if not path.is_file():
            raise ConfigError(f"{path}: missing; run the stage that writes it first")
        h.update(sha256_file(path).encode())
    return f"local-{h.hexdigest()[:16]}"


def run(
    params: Params,
    model_dir: str | Path,
    search_dir: str | Path,
    evaluate_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    pipeline_run_id: str | None = None,
    tracking_uri: str | None = None,
    risk_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Register the searched model, gate its promotion, and write ``registration.json``.

    Args:
        params: ``register.*`` is read.
        model_dir: The model directory (``adapter_model.safetensors``, ``model_config.json``).
        search_dir: The search output (``thresholds.json``).
        evaluate_dir: The evaluate output (``metrics.json``; ``model_card.md`` is logged too).
        data_dir: The prepared data (preprocessing, class names, the input example's images).
        out_dir: Where ``registration.json``, ``preprocess.json`` and ``manifest.json`` go.
        pipeline_run_id: Identifies the pipeline run; registering it again reuses its version
            (default: :func:`default_pipeline_run_id`).
        tracking_uri: Overrides ``register.tracking_uri``
            (:func:`~dyn_adapter.mlops.store.resolve_tracking_uri`).
        risk_dir: The ``calibrate`` output: the model carries its risk-controlled points, so a
            request can ask for ``max_disagreement`` instead of a ``budget``.

    Returns:
        ``registration.json``'s content: ``name``, ``version``, ``aliases``, ``gate``
        (``pass``/``fail``), ``promoted``, ``reason``, ``model_uri``, ``reused``, ...

    Raises:
        ConfigError: Missing or inconsistent inputs, a deleted experiment.
        ServiceUnavailable: The tracking server cannot be reached.
    """
    from ..mlops.pyfunc import write_model_code, write_preprocess
    from ..mlops.registry import register_version
    from ..mlops.store import redact_uri, resolve_tracking_uri

    cfg = params.register
    if pipeline_run_id is None:
        pipeline_run_id = default_pipeline_run_id(model_dir, search_dir, evaluate_dir)
    if not pipeline_run_id.strip():
        raise ConfigError("register: pipeline_run_id must not be empty")
    uri = resolve_tracking_uri(tracking_uri, cfg.tracking_uri)  # refuses credentials early
    out = Path(out_dir)
    model_cfg, model_meta = read_config(model_dir)
    thresholds = Thresholds(search_dir)
    evaluation = Evaluation(evaluate_dir)
    data = PreparedData(data_dir)
    if data.num_classes != model_cfg.num_classes:
        raise ConfigError(
            f"{data_dir}: {data.num_classes} classes, the model {model_dir} has "
            f"{model_cfg.num_classes}; pass the prepared data the model was trained on"
        )
    paths = {
        "model": Path(model_dir),
        "thresholds": thresholds.path,
        "metrics": evaluation.metrics_path,
        "card": evaluation.card_path,
        "preprocess": out / PREPROCESS_FILE,
        "code": out / MODEL_CODE_FILE,
    }
    if risk_dir is not None:
        paths["risk_points"] = RiskPoints(risk_dir).path  # its exits: checked when served
    write_preprocess(data, paths["preprocess"], params.inference)
    write_model_code(paths["code"])
    result = register_version(
        cfg, paths, data, evaluation.operating_point(), model_meta, pipeline_run_id, uri
    )
    result["tracking_uri"] = redact_uri(uri)
    write_json(out / REGISTRATION_FILE, result)
    write_json(
        out / MANIFEST_FILE,
        stage_manifest(
            "register",
            {"register": to_dict(cfg)},
            model=str(model_dir),
            search=str(search_dir),
            evaluate=str(evaluate_dir),
            data=str(data_dir),
            pipeline_run_id=pipeline_run_id,
        ),
    )
    return result


def describe(result: dict[str, Any], out_dir: Path) -> str:
    """The command's result line: the version and where the champion alias stands."""
    return (
        f"registered {result['name']} v{result['version']} (aliases: "
        f"{', '.join(result['aliases']) or 'none'}; {result['reason']}) -> "
        f"{out_dir / REGISTRATION_FILE}"
    )
