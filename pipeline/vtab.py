"""The VTAB-1k profile: one branch per task (prepare → train Dyn-Adapter and its two baselines,
static PETL and frozen-probe exits, each on a GPU → search → evaluate against both), collected
into the VTAB table."""

from typing import Any

from kfp import dsl

from components import DEFAULT_IMAGE, build

from .demo import TRAINED

NAME = "dyn-adapter-vtab"
ACCELERATOR = "nvidia.com/gpu"  # the Kubernetes resource each training task requests one of


def build_pipeline(
    defaults: dict[str, Any], image: str = DEFAULT_IMAGE, task_parallelism: int = 0
) -> Any:
    """The VTAB pipeline; each training task requests one GPU.

    ``task_parallelism`` caps how many tasks' branches run at once (0: no cap).
    """
    c = build(image)

    @dsl.pipeline(
        name=NAME,
        description="Dyn-Adapter on VTAB-1k: every task trained, searched and evaluated in "
        "parallel, then the VTAB table (per task, group means, mean of tasks, GFLOPs).",
    )
    def vtab_pipeline(
        tasks: list,
        data_root: str,
        params: dict = defaults,
        overrides: list = [],  # noqa: B006 (KFP reads defaults from the signature)
        tracking_uri: str = "",
    ) -> dsl.Artifact:
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        with dsl.ParallelFor(tasks, name="vtab-tasks", parallelism=task_parallelism) as task:
            task_overrides = c.task_overrides(overrides=overrides, data_root=data_root, task=task)
            task_overrides.set_display_name("task parameters")
            common = dict(params=params, overrides=task_overrides.output)
            # Only the evaluations are tracked (one child run per task); the table ends the run.
            prep = c.prepare_data(**common).set_display_name("prepare data")
            data = prep.outputs["data"]
            trained = {}
            for variant, title in TRAINED:
                trained[variant] = c.train_model(**common, variant=variant, data=data)
                trained[variant].set_display_name(title)
                trained[variant].set_accelerator_type(ACCELERATOR).set_accelerator_limit(1)
            search = c.search_thresholds(
                **common, model=trained["dyn"].outputs["model"], data=data
            ).set_display_name("search thresholds")
            probe_search = c.search_thresholds(
                **common,
                model=trained["probe"].outputs["model"],
                data=data,
                stage_name="search-probe",
            ).set_display_name("search thresholds: frozen probe")
            evaluation = c.evaluate_model(
                **common,
                tracking_uri=tracking_uri,
                pipeline_run_id=run_id,
                model=trained["dyn"].outputs["model"],
                thresholds=search.outputs["thresholds"],
                data=data,
                static_model=trained["static"].outputs["model"],
                probe_model=trained["probe"].outputs["model"],
                probe_thresholds=probe_search.outputs["thresholds"],
                task_name=task,
            ).set_display_name("evaluate")
        table = c.vtab_table(
            params=params,
            overrides=overrides,
            tasks=tasks,
            evaluations=dsl.Collected(evaluation.outputs["evaluation"]),
            tracking_uri=tracking_uri,
            pipeline_run_id=run_id,
        ).set_display_name("VTAB table")
        return table.outputs["table"]

    return vtab_pipeline
