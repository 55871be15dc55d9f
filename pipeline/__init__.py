"""The KFP pipelines (DAG wiring only): ``demo`` (one dataset, both baselines, registration)
and ``vtab`` (a fan-out over VTAB-1k tasks); ``runner`` compiles, runs and submits them for
``dyn-adapter pipeline`` (``cli``). Nothing is imported here: the CLI's help stays fast."""
