"""Compile, run locally (KFP local runner, embedded defaults) or submit to a Kubeflow cluster."""

from __future__ import annotations

import os
import re
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal

from components import DEFAULT_IMAGE
from dyn_adapter.console import PROGRESS_FILE_ENV
from dyn_adapter.errors import ConfigError
from dyn_adapter.mlops.names import DEFAULT_EXPERIMENT
from dyn_adapter.params import params_from_dict, read_params_file

from .kinds import PIPELINES, PipelineKind, pipeline_kind
from .progress import executor_tasks, run_view, start_progress_file, task_labels

Runner = Literal["subprocess", "docker"]
# The image's user (Dockerfile: USER 1000:1000), as on Kubernetes with runAsNonRoot, and its
# $DYN_ADAPTER_CACHE.
CONTAINER_USER = "1000:1000"
IMAGE_CACHE = "/opt/dyn-adapter/cache"
# Passed on to containers where set: S3 and MLflow credentials and endpoints (never in params).
FORWARDED_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "MLFLOW_S3_ENDPOINT_URL",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
)
# Where `pipeline compile` writes each pipeline's package by default.
COMPILED = {name: p.compiled for name, p in PIPELINES.items()}


def load_defaults(params_path: str | Path = "params.yaml") -> dict[str, Any]:
    """``params.yaml`` as the pipelines' default ``params`` (validated first)."""
    path = Path(params_path)
    raw = read_params_file(path)
    pruned = _drop_nulls(raw)
    # KFP parameters cannot hold null: a dropped key must mean the same as its null.
    if params_from_dict(pruned) != params_from_dict(raw):
        raise ConfigError(f"{path}: a null value differs from its default; write the value out")
    return pruned


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    return value


def build(kind: PipelineKind, defaults: dict[str, Any], image: str = DEFAULT_IMAGE) -> Any:
    return pipeline_kind(kind).build(defaults, image, 0)


def compile_pipeline(
    kind: PipelineKind = "demo",
    out: str | Path | None = None,
    params_path: str | Path = "params.yaml",
    image: str = DEFAULT_IMAGE,
) -> Path:
    """Write the pipeline package (YAML) that the KFP UI uploads."""
    from kfp import compiler

    from dyn_adapter.files import atomic_path

    check_image_reference(image)
    path = Path(out) if out is not None else pipeline_kind(kind).compiled
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        compiler.Compiler().compile(build(kind, load_defaults(params_path), image), str(tmp))
    return path


def check_image_reference(image: str) -> None:
    """An image named by digest must carry a whole sha256 digest (``name@sha256:<64 hex>``)."""
    if "@" in image and not re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", image):
        raise ConfigError(
            f"--image {image}: a reference by digest reads registry/name@sha256:<64 hex digits> "
            "(as `dyn-adapter pipeline image --push` prints it)"
        )
    if not image or any(c.isspace() for c in image):
        raise ConfigError(f"--image {image!r}: not an image reference")


def run_local(
    params_path: str | Path = "params.yaml",
    overrides: Sequence[str] = (),
    pipeline_root: str | Path = "outputs/kfp",
    tracking_uri: str | None = None,
    runner: Runner = "subprocess",
    image: str = DEFAULT_IMAGE,
    kind: PipelineKind = "demo",
    arguments: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run a whole DAG with the KFP local runner; returns the run's summary.

    ``kind``: the demo pipeline, or the VTAB pipeline over ``arguments["tasks"]`` under
    ``arguments["data_root"]``. ``subprocess``: tasks run as subprocesses of this Python (the
    project's venv, which holds what the image holds). ``docker``: every task runs in
    ``image`` as on Kubeflow (see :func:`docker_runner`). Artifacts land under
    ``pipeline_root``. MLflow: ``tracking_uri``, else ``register.tracking_uri``, else
    ``$MLFLOW_TRACKING_URI``, else the embedded SQLite store in ``outputs/mlflow``.
    """
    from kfp import local

    from dyn_adapter.mlops.store import redact_uri, resolve_tracking_uri

    if runner not in ("subprocess", "docker"):
        raise ConfigError(f"runner {runner!r}: expected subprocess or docker")
    check_image_reference(image)
    dag = pipeline_kind(kind)
    defaults = load_defaults(params_path)
    params = params_from_dict(defaults, overrides)  # fail before any task starts
    arguments = dag.arguments(arguments or {})
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    uri = resolve_tracking_uri(tracking_uri, params.register.tracking_uri)
    # On a few cores, branches running side by side only slow each other down.
    parallelism = 1 if (os.cpu_count() or 1) < 4 else 0
    pipeline = dag.build(defaults, image, parallelism)
    items, data_path = dag.items(params, arguments), dag.data_path(params, arguments)
    log = root / "logs" / time.strftime("run-%Y%m%d-%H%M%S.log")
    progress = start_progress_file(log)  # before the root is handed to the container user
    with ExitStack() as stack:
        if runner == "docker":
            kfp_runner = stack.enter_context(docker_runner(image, root, uri, data_path, progress))
        else:
            kfp_runner = local.SubprocessRunner(use_venv=False)
            # Tasks run in this venv, which holds what the image holds: say so once, not per task.
            warnings.filterwarnings("ignore", "You may be attemping to run a task", RuntimeWarning)
        warnings.filterwarnings(
            "ignore", ".*have no effect in the current local runner", UserWarning
        )
        local.init(runner=kfp_runner, pipeline_root=str(root))
        total = executor_tasks(pipeline, len(items))
        stack.enter_context(quiet_task_environment())
        view = stack.enter_context(run_view(log, task_labels(pipeline), total, items, progress))
        tic = time.perf_counter()
        try:
            task = pipeline(
                params=defaults, overrides=list(overrides), tracking_uri=uri, **arguments
            )
        except RuntimeError as e:
            if "finished with status" not in str(e):
                raise
            message = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # KFP colours task names
            said = f" It said: {view.user_errors[-1]}" if view.user_errors else ""
            raise ConfigError(f"{message}{said} Its whole log: {log}") from None
        seconds = time.perf_counter() - tic
    shown = redact_uri(uri)  # $MLFLOW_TRACKING_URI may carry what a summary must not show
    return dag.summarize(task, seconds, shown) | {"log": str(log), "steps": view.finished}


@contextmanager
def quiet_task_environment() -> Iterator[None]:
    """No MLflow download bars in the tasks' logs (they are files now, not a terminal)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


@contextmanager
def docker_runner(
    image: str, root: Path, tracking_uri: str, data_path: str, progress: Path | None = None
) -> Iterator[Any]:
    """``kfp.local.DockerRunner`` running every task in ``image`` as on Kubeflow: as uid 1000,
    on the host network (an MLflow or S3 server on 127.0.0.1 is reachable), with the pipeline
    root mounted at its own path (KFP does that), an embedded SQLite MLflow store mounted
    likewise, a local ``data_path`` mounted read-only where the container looks for it, and
    the S3/MLflow credentials of this environment (``FORWARDED_ENV``) and the ``progress`` records
    file (under the root). The root file system is
    read-only; ``/tmp`` and the mirror of ``s3://`` data are scratch space (tmpfs). The Docker
    engine is started for the run if none is running (:mod:`pipeline.docker_engine`)."""
    from docker.types import Mount
    from kfp import local

    from dyn_adapter.mlops.store import sqlite_path

    from .docker_engine import docker_engine

    with docker_engine() as engine:
        _ensure_image(engine, image)
        writable = [root]
        db = sqlite_path(tracking_uri)
        if db is not None:  # the database and its artifacts directory beside it
            writable.append(db.resolve().parent)
        for directory in writable:
            _hand_to_container_user(directory)
        mounts = [Mount(str(d), str(d), type="bind") for d in writable[1:]]
        data = Path(data_path)
        if not data_path.startswith("s3://") and data.exists():
            # Where the container resolves the same string: relative paths from /workspace.
            target = data if data.is_absolute() else Path("/workspace") / data
            mounts.append(Mount(str(target), str(data.resolve()), type="bind", read_only=True))
        environment = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        if progress is not None:
            environment[PROGRESS_FILE_ENV] = str(progress)
        previous = os.environ.get("DOCKER_HOST")
        os.environ["DOCKER_HOST"] = engine.host  # the runner's docker.from_env() reads it
        try:
            yield local.DockerRunner(
                network_mode="host",
                user=CONTAINER_USER,
                mounts=mounts,
                environment=environment,
                # As a hardened pod: nothing but the mounts and these scratch spaces is writable.
                read_only=True,
                tmpfs={"/tmp": "mode=1777", f"{IMAGE_CACHE}/s3": "mode=1777"},
            )
        finally:
            if previous is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = previous


def _ensure_image(engine: Any, image: str) -> None:
    """``image`` on the engine, pulled from its registry if need be (a pushed digest)."""
    if engine.has_image(image):
        return
    try:
        engine.docker("pull", "--quiet", image)
    except ConfigError as e:
        raise ConfigError(
            f"image {image}: not on the Docker engine ({engine.host}) and cannot be pulled; "
            f"build it with `make image` (or pass --image with one that is there): {e}"
        ) from None


def _hand_to_container_user(directory: Path) -> None:
    """Make ``directory`` (and what it holds) writable by the containers' uid 1000."""
    uid, gid = (int(x) for x in CONTAINER_USER.split(":"))
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == uid:
        return
    if os.geteuid() != 0:
        raise ConfigError(
            f"{directory}: the containers run as uid {uid} and cannot write here; run as uid "
            f"{uid} or root, or choose a directory uid {uid} owns"
        )
    for path in [directory, *directory.rglob("*")]:
        if not path.is_symlink():
            os.chown(path, uid, gid)


def submit(
    host: str,
    package: str | Path = COMPILED["demo"],
    arguments: dict[str, Any] | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    namespace: str | None = None,
    existing_token: str | None = None,
    pipeline_root: str | None = None,
) -> str:
    """Submit a compiled package to a Kubeflow Pipelines endpoint; returns the run id.

    ``pipeline_root`` (e.g. ``s3://bucket/kfp``) overrides where the run's artifacts go;
    the cluster's object-store credentials apply, none are sent from here.
    """
    import kfp

    path = Path(package)
    if not path.is_file():
        raise ConfigError(f"{path}: no pipeline package; run `dyn-adapter pipeline compile`")
    client = kfp.Client(host=host, namespace=namespace, existing_token=existing_token)
    run = client.create_run_from_pipeline_package(
        str(path),
        arguments=arguments or {},
        run_name=run_name,
        experiment_name=experiment,
        namespace=namespace,
        pipeline_root=pipeline_root,
    )
    return str(run.run_id)
