"""MLflow pyfunc serving of a Dyn-Adapter model: base64 image files in, early-exit predictions out.

The model is a :class:`mlflow.pyfunc.PythonModel` that lives in this package, logged as
"models from code" (a three-line entry script, :func:`write_model_code`: no pickled object in
the model), with three explicit artifacts: the model directory (PETL and head weights plus ``model_config.json``; the
frozen backbone is rebuilt from its source and its hash checked), the search stage's
``thresholds.json``, and ``preprocess.json`` (the backbone's data config, the class names and the
prepared image size). The ``dyn_adapter`` package must therefore be installed where the model
is served (the pipeline's image, ``--env-manager local``).

Request: a DataFrame with a column ``image`` of base64-encoded image files (PNG, JPEG, ...;
grey, RGB, RGBA, palette and 16-bit images are converted to 8-bit RGB exactly as ``prepare``
converts training images), and optional predict-time parameters: ``budget``, a fraction of the
full model's GFLOPs, which picks the thresholds of the largest searched budget not above it; or
``max_disagreement``, a risk level, which picks the cheapest thresholds certified (``dyn-adapter
calibrate``) to disagree with the full model on at most that share of images, with
probability 1 - delta; when given it takes precedence over ``budget``. Every response row says
which exit answered. Inference is real early exit with batch compaction, run by the inference
engine and at the precision that ``preprocess.json`` names (``inference.*`` of the registering
run: on CUDA by default CUDA graphs in bf16).

This is the only module of the package that imports MLflow at module level; everything else
imports without it.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import threading
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from PIL import Image

from ..artifacts import RiskPoints, Thresholds
from ..config import from_dict, to_dict
from ..data.images import decode_rgb
from ..data.prepared import PreparedData
from ..data.transforms import to_model_input
from ..errors import ConfigError
from ..files import atomic_path, write_json
from ..inference import InferenceConfig, load_engine, resolve_device

# Keys of the pyfunc model's artifacts (``context.artifacts``).
MODEL_ARTIFACT = "model"
THRESHOLDS_ARTIFACT = "thresholds"
PREPROCESS_ARTIFACT = "preprocess"
RISK_ARTIFACT = "risk_points"  # optional: a model registered with its calibration
PREPROCESS_FORMAT = 1
_MODEL_CODE = '''"""MLflow models-from-code entry point of a Dyn-Adapter model (from `dyn-adapter register`)."""

import mlflow

from dyn_adapter.mlops.pyfunc import DynAdapterPyfunc

mlflow.models.set_model(DynAdapterPyfunc())
'''

IMAGE_COLUMN = "image"
BUDGET_PARAM = "budget"
RISK_PARAM = "max_disagreement"
DEFAULT_BUDGET = 1.0
OUTPUT_COLUMNS = (
    "label",
    "label_index",
    "confidence",
    "exit_index",
    "exit_block",
    "gflops",
    "policy",
)
BATCH_SIZE = 64  # images per forward pass: bounds memory on large requests
_EPS = 1e-9  # budgets are floats read back from JSON


def bad_request(message: str) -> MlflowException:
    """An input error: the scoring server answers it with HTTP 400 and the message."""
    return MlflowException.invalid_parameter_value(message)


def model_signature() -> ModelSignature:
    """Input (base64 image column), output columns, the ``budget`` parameter (default 1.0) and
    ``max_disagreement`` (default none)."""
    return ModelSignature(
        inputs=Schema([ColSpec("string", IMAGE_COLUMN)]),
        outputs=Schema(
            [
                ColSpec("string", "label"),
                ColSpec("long", "label_index"),
                ColSpec("double", "confidence"),
                ColSpec("long", "exit_index"),
                ColSpec("long", "exit_block"),
                ColSpec("double", "gflops"),
                ColSpec("string", "policy"),
            ]
        ),
        params=ParamSchema(
            [
                # No default here: a request that names neither gets DEFAULT_BUDGET, one that
                # names both is refused (which would answer is not the asker's guess to make).
                ParamSpec(BUDGET_PARAM, "double", None),
                ParamSpec(RISK_PARAM, "double", None),
            ]
        ),
    )


def write_preprocess(
    data: PreparedData, path: str | Path, inference: InferenceConfig | None = None
) -> Path:
    """Write ``preprocess.json``: what serving needs from the prepared data, and how it runs
    the model (``inference``: engine and precision; the defaults without it)."""
    path = Path(path)
    write_json(
        path,
        {
            "format_version": PREPROCESS_FORMAT,
            "data_config": data.data_config,
            "classes": data.classes,
            "image_size": list(data.image_size),
            "inference": to_dict(inference or InferenceConfig()),
        },
    )
    return path


def write_model_code(path: str | Path) -> Path:
    """Write the models-from-code entry script that ``log_model(python_model=path)`` takes."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(_MODEL_CODE)
    return path


def encode_image(image: np.ndarray, fmt: str = "PNG") -> str:
    """Base64 of an image file holding a uint8 ``[H, W]`` or ``[H, W, C]`` array (for requests)."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def select_policy(policies: Sequence[dict[str, Any]], budget: Any) -> dict[str, Any]:
    """The searched policy of the largest budget not above ``budget``.

    Args:
        policies: ``thresholds.json`` ``budgets`` rows, sorted by ``budget``.
        budget: Fraction of the full model's GFLOPs; at least the smallest searched budget.
            Budgets above the largest searched one use its thresholds.

    Raises:
        MlflowException: (``INVALID_PARAMETER_VALUE``) NaN, infinite, non-positive, not a
            number, or below the smallest searched budget.
    """
    low = float(policies[0]["budget"])
    searched = ", ".join(f"{float(p['budget']):g}" for p in policies)
    allowed = (
        f"allowed: a finite number >= {low:g} (the smallest searched budget; searched: "
        f"{searched}; larger values use the largest)"
    )
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise bad_request(f"params.{BUDGET_PARAM}={budget!r}: not a number; {allowed}") from None
    if not math.isfinite(value) or value <= 0 or value < low - _EPS:
        raise bad_request(f"params.{BUDGET_PARAM}={budget!r}: out of range; {allowed}")
    return max(
        (p for p in policies if float(p["budget"]) <= value + _EPS),
        key=lambda p: float(p["budget"]),
    )


def select_risk_point(points: Sequence[dict[str, Any]], max_disagreement: Any) -> dict[str, Any]:
    """The cheapest point certified at disagreement <= ``max_disagreement``.

    Raises:
        MlflowException: (``INVALID_PARAMETER_VALUE``) not a number, or below every certified
            level, or a model registered without risk-controlled points.
    """
    certified = sorted(p["epsilon"] for p in points if p["risk"] == "disagreement")
    if not certified:
        raise bad_request(
            f"params.{RISK_PARAM}: this model version was registered without risk-controlled "
            f"points (`dyn-adapter calibrate`); ask for a {BUDGET_PARAM} instead"
        )
    levels = ", ".join(f"{e:g}" for e in certified)
    try:
        value = float(max_disagreement)
    except (TypeError, ValueError):
        raise bad_request(
            f"params.{RISK_PARAM}={max_disagreement!r}: not a number; certified levels: {levels}"
        ) from None
    fits = [p for p in points if p["risk"] == "disagreement" and p["epsilon"] <= value + _EPS]
    if not math.isfinite(value) or not fits:
        raise bad_request(
            f"params.{RISK_PARAM}={max_disagreement!r}: no point is certified at or below it; "
            f"certified levels: {levels}"
        )
    return min(fits, key=lambda p: p["gflops"])


def _base64_bytes(text: str, where: str) -> bytes:
    text = "".join(text.split())  # encoders may wrap lines
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]  # a data URL: data:image/png;base64,....
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise bad_request(
            f"{where}: {IMAGE_COLUMN!r} is not valid base64 ({e}); send each image file base64-encoded"
        ) from None
    if not raw:
        raise bad_request(f"{where}: {IMAGE_COLUMN!r} is empty; send a base64-encoded image file")
    return raw


def decode_image(value: Any, size: tuple[int, int], where: str = "image") -> np.ndarray:
    """One image cell to uint8 RGB ``[H, W, 3]`` of ``size`` (``(H, W)``), as ``prepare`` does.

    Args:
        value: A base64 string of an image file (a ``data:`` URL is accepted too), or the raw
            file bytes.
        size: The prepared images' size; other sizes are resized (bicubic), like ``prepare``.
        where: Names the cell in error messages (``row 3``).

    Raises:
        MlflowException: (``INVALID_PARAMETER_VALUE``) not base64, or not a decodable image.
    """
    if isinstance(value, str):
        raw = _base64_bytes(value, where)
    elif isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    else:
        raise bad_request(
            f"{where}: {IMAGE_COLUMN!r} is a {type(value).__name__}, expected a base64 string "
            "of an image file"
        )
    try:
        return decode_rgb(io.BytesIO(raw), size)
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise bad_request(
            f"{where}: not a decodable image file ({type(e).__name__}: {e}); send PNG or JPEG"
        ) from None


def decode_images(frame: Any, size: tuple[int, int]) -> list[np.ndarray]:
    """Every row's image, decoded; errors name the row (0-based position in the request)."""
    if not isinstance(frame, pd.DataFrame) or IMAGE_COLUMN not in frame.columns:
        got = list(frame.columns) if isinstance(frame, pd.DataFrame) else type(frame).__name__
        raise bad_request(
            f"input needs a column {IMAGE_COLUMN!r} of base64-encoded image files; got {got}"
        )
    return [
        decode_image(v, size, where=f"row {i}") for i, v in enumerate(frame[IMAGE_COLUMN].tolist())
    ]


class DynAdapterPyfunc(PythonModel):
    """Early-exit inference of a searched Dyn-Adapter model behind MLflow's pyfunc interface.

    Log it (:func:`write_model_code`) with the artifacts :data:`MODEL_ARTIFACT` (model directory),
    :data:`THRESHOLDS_ARTIFACT` (``thresholds.json``) and :data:`PREPROCESS_ARTIFACT`
    (``preprocess.json``, see :func:`write_preprocess`) and :func:`model_signature`.
    """

    def load_context(self, context: Any) -> None:
        """Load the model (merged for inference), the searched policies and the preprocessing."""
        arts = context.artifacts
        self.setup(
            arts[MODEL_ARTIFACT],
            arts[THRESHOLDS_ARTIFACT],
            arts[PREPROCESS_ARTIFACT],
            risk_file=arts.get(RISK_ARTIFACT),
        )

    def setup(
        self,
        model_dir: str | Path,
        thresholds_file: str | Path,
        preprocess_file: str | Path,
        device: str = "auto",
        risk_file: str | Path | None = None,
    ) -> None:
        """What :meth:`load_context` does, from plain paths (also usable without MLflow's loader).

        Raises:
            MlflowException: The artifacts do not fit together (exits, classes) or are empty.
        """
        self.device = resolve_device(device)
        # On CUDA one request at a time from upload to answer: the engine captures a CUDA
        # graph the first time it meets a batch size, and a capture fails if another thread
        # uses the GPU meanwhile (the engine's own lock covers only its passes).
        self._gpu_turn = threading.Lock() if self.device.type == "cuda" else nullcontext()
        pre = json.loads(Path(preprocess_file).read_text())
        inference = from_dict(InferenceConfig, pre.get("inference"), "inference")
        self.engine = load_engine(model_dir, self.device, inference)
        self.model = self.engine.model
        try:
            self.policies = Thresholds(thresholds_file, self.model.num_exits).budgets
            self.risk_points = (
                RiskPoints(risk_file, self.model.num_exits).points if risk_file else []
            )
        except ConfigError as e:
            raise MlflowException(str(e)) from None
        self.data_config: dict[str, Any] = pre["data_config"]
        self.classes: list[str] = list(pre["classes"])
        height, width = pre["image_size"]
        self.image_size = (int(height), int(width))
        self.exit_blocks = list(self.model.exit_blocks)
        self.exit_gflops = [e.gflops_cumulative for e in self.model.exit_info]
        self._check(preprocess_file)

    def _check(self, preprocess_file: str | Path) -> None:
        if len(self.classes) != self.model.num_classes:
            raise MlflowException(
                f"{preprocess_file}: {len(self.classes)} class names for a model with "
                f"{self.model.num_classes} classes; it comes from other prepared data"
            )

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Predict every row's image with the thresholds chosen by ``params["max_disagreement"]``
        when given, else by ``params["budget"]``.

        Returns:
            One row per input row: ``label`` (class name), ``label_index``, ``confidence``
            (max softmax probability at the exit taken), ``exit_index`` (0-based), ``exit_block``
            (1-based backbone block), ``gflops`` (cumulative GFLOPs to that exit), ``policy``
            (which answered: ``budget 0.5 (asked 0.55)``, ``budget 1 (default)`` or
            ``max_disagreement 0.05 (asked 0.1)``).

        Raises:
            MlflowException: (``INVALID_PARAMETER_VALUE``, HTTP 400 when served) a bad budget
                or risk level, a missing ``image`` column, or a row that is not a base64 image
                file.
        """
        params = params or {}
        budget, level = params.get(BUDGET_PARAM), params.get(RISK_PARAM)
        if budget is not None and level is not None:
            raise bad_request(
                f"params.{BUDGET_PARAM} and params.{RISK_PARAM}: give one, a fraction of the "
                "GFLOPs or a risk level, not both"
            )
        if level is not None:
            policy = select_risk_point(self.risk_points, level)
            answered = f"{RISK_PARAM} {float(policy['epsilon']):g} (asked {float(level):g})"
        else:
            asked = "default" if budget is None else f"asked {float(budget):g}"
            policy = select_policy(self.policies, DEFAULT_BUDGET if budget is None else budget)
            answered = f"{BUDGET_PARAM} {float(policy['budget']):g} ({asked})"
        images = decode_images(model_input, self.image_size)
        pred, conf, exits = self._infer(images, policy)
        return pd.DataFrame(
            {
                "label": [self.classes[i] for i in pred],
                "label_index": pred.astype(np.int64),
                "confidence": conf.astype(np.float64),
                "exit_index": exits.astype(np.int64),
                "exit_block": np.asarray(self.exit_blocks, dtype=np.int64)[exits],
                "gflops": np.asarray(self.exit_gflops, dtype=np.float64)[exits],
                "policy": [answered] * len(pred),
            },
            columns=list(OUTPUT_COLUMNS),
        )

    @torch.no_grad()
    def _infer(
        self, images: list[np.ndarray], policy: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        preds, confs, exits = [], [], []
        for start in range(0, len(images), BATCH_SIZE):
            with self._gpu_turn:
                x8 = torch.from_numpy(np.stack(images[start : start + BATCH_SIZE]))
                x = to_model_input(x8.to(self.device), self.data_config)
                out = self.engine.dynamic(x, policy["thresholds"])
                preds.append(out.prediction.cpu().numpy())
                confs.append(out.confidence.float().cpu().numpy())
                exits.append(out.exit_index.cpu().numpy())
        if not preds:
            return (np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int64))
        return np.concatenate(preds), np.concatenate(confs), np.concatenate(exits)
