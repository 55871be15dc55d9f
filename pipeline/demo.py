"""The main pipeline: prepare → train (Dyn-Adapter ∥ static PETL ∥ frozen probe) → sparsity
tuning (ParallelFor over candidates) → threshold search (ours ∥ probe's) → evaluate → register."""

from typing import Any, NamedTuple

from kfp import dsl

from components import DEFAULT_IMAGE, build

NAME = "dyn-adapter"


class Outputs(NamedTuple):
    evaluation: dsl.Artifact
    registration: dsl.Artifact


def build_pipeline(
    defaults: dict[str, Any], image: str = DEFAULT_IMAGE, candidate_parallelism: int = 0
) -> Any:
    """The pipeline function, its ``params`` defaulting to ``defaults`` (params.yaml).

    ``candidate_parallelism`` caps how many sparsity candidates train at once (0: no cap).
    """
    c = build(image)

    @dsl.pipeline(
        name=NAME,
        description="Dyn-Adapter: multi-exit PETL training, sparsity tuning, threshold search, "
        "evaluation against the static PETL and frozen-probe baselines, MLflow registration.",
    )
    def dyn_adapter_pipeline(
        params: dict = defaults,
        overrides: list = [],  # noqa: B006 (KFP reads defaults from the signature)
        tracking_uri: str = "",
    ) -> Outputs:
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        common = dict(params=params, overrides=overrides)
        tracked = dict(common, tracking_uri=tracking_uri, pipeline_run_id=run_id)

        prep = c.prepare_data(**tracked).set_display_name("prepare data")
        data = prep.outputs["data"]
        trained = {}
        for variant, title in [
            ("dyn", "train Dyn-Adapter"),
            ("static", "baseline: static PETL"),
            ("probe", "baseline: frozen-probe exits"),
        ]:
            trained[variant] = c.train_model(**tracked, variant=variant, data=data)
            trained[variant].set_display_name(title)
        dyn_model = trained["dyn"].outputs["model"]

        grid = c.sparsity_grid(**common).set_display_name("sparsity grid")
        with dsl.ParallelFor(
            grid.output, name="sparsity-candidates", parallelism=candidate_parallelism
        ) as candidate:
            tuned = c.sparsify_candidate(
                **common, candidate=candidate, data=data, init_model=dyn_model
            ).set_display_name("sparsity candidate")
        best = c.sparsify_select(
            **tracked,
            data=data,
            init_model=dyn_model,
            candidates=dsl.Collected(tuned.outputs["candidate_model"]),
        ).set_display_name("select sparsity")
        model = best.outputs["model"]

        search = c.search_thresholds(**tracked, model=model, data=data)
        search.set_display_name("search thresholds")
        probe_search = c.search_thresholds(
            **tracked,
            model=trained["probe"].outputs["model"],
            data=data,
            stage_name="search-probe",
        ).set_display_name("search thresholds: frozen probe")
        evaluation = c.evaluate_model(
            **tracked,
            model=model,
            thresholds=search.outputs["thresholds"],
            data=data,
            static_model=trained["static"].outputs["model"],
            probe_model=trained["probe"].outputs["model"],
            probe_thresholds=probe_search.outputs["thresholds"],
        ).set_display_name("evaluate")
        registration = c.register_model(
            **tracked,
            model=model,
            thresholds=search.outputs["thresholds"],
            evaluation=evaluation.outputs["evaluation"],
            data=data,
        ).set_display_name("register in MLflow")
        return Outputs(
            evaluation=evaluation.outputs["evaluation"],
            registration=registration.outputs["registration"],
        )

    return dyn_adapter_pipeline
