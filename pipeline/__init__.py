"""The KFP pipelines (DAG wiring only): ``demo`` (one dataset, both baselines, registration)
and ``vtab`` (a fan-out over VTAB-1k tasks). ``compile``, ``run_local`` and ``submit`` are
what ``dyn-adapter pipeline`` calls."""

from .runner import compile_pipeline, load_defaults, run_local, submit

__all__ = ["compile_pipeline", "load_defaults", "run_local", "submit"]
