"""The main pipeline: prepare → train (Dyn-Adapter ∥ static PETL ∥ frozen probe) → sparsity
tuning (ParallelFor over candidates) → threshold search (ours ∥ probe's) ∥ risk calibration →
evaluate → register."""

from typing import Any, NamedTuple

from kfp import dsl

from components import DEFAULT_IMAGE, build
from components.shim import RUN_FORM
from dyn_adapter.config import to_dict
from dyn_adapter.params import params_from_dict

NAME = "dyn-adapter"


class Outputs(NamedTuple):
    evaluation: dsl.Artifact
    registration: dsl.Artifact


# The models every run trains, with their display names: Dyn-Adapter and its two baselines.
TRAINED = [
    ("dyn", "train Dyn-Adapter"),
    ("static", "baseline: static PETL"),
    ("probe", "baseline: frozen-probe exits"),
]


def build_pipeline(
    defaults: dict[str, Any], image: str = DEFAULT_IMAGE, candidate_parallelism: int = 0
) -> Any:
    """The pipeline function, its ``params`` defaulting to ``defaults`` (params.yaml).

    ``candidate_parallelism`` caps how many sparsity candidates train at once (0: no cap).
    """
    c = build(image)
    # The run form's defaults: what ``defaults`` sets, or the built-in value it leaves out.
    full = to_dict(params_from_dict(defaults))
    form = {name: _get(full, key) for name, key in RUN_FORM.items()}

    @dsl.pipeline(
        name=NAME,
        description="Dyn-Adapter: multi-exit PETL training, sparsity tuning, threshold search, "
        "risk-controlled calibration, evaluation against the static PETL and frozen-probe baselines, MLflow registration.",
    )
    # The run form: what users change most on top, then the MLflow server, then the rest.
    # Each description below stays on one line: the KFP UI shows it as written.
    def dyn_adapter_pipeline(
        data_source: str = form["data_source"],
        data_path: str = form["data_path"],
        petl_method: str = form["petl_method"],
        epochs: int = form["epochs"],
        budgets: list = form["budgets"],
        model_name: str = form["model_name"],
        tracking_uri: str = "",
        overrides: list = [],  # noqa: B006 (KFP reads defaults from the signature)
        params: dict = defaults,
    ) -> Outputs:
        """Dyn-Adapter on one dataset, from data to a registered MLflow model.

        Args:
            data_source: where the images come from: fashion-mnist (the Debian package), vtab (a VTAB-1k task directory), imagefolder (one folder per class).
            data_path: the dataset's directory, a path inside the image or s3://bucket/prefix.
            petl_method: the PETL method tuned into the frozen ViT: adapter, lora or repadapter.
            epochs: training epochs of Dyn-Adapter and of both baselines.
            budgets: the FLOPs budgets (fractions of the full model's GFLOPs) to search thresholds for, e.g. [0.25, 0.5, 0.75, 1.0].
            model_name: the MLflow registered model that gets the new version.
            tracking_uri: the MLflow server (http://mlflow:5000); empty: nothing is tracked and the registration goes to a store inside the register step, lost with it.
            overrides: more params.yaml settings as KEY=VALUE strings (train.lr=0.002); they apply last.
            params: the whole params.yaml (the compile-time file); the fields above apply over it.
        """
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        resolved = c.resolve_params(
            params=params,
            overrides=overrides,
            data_source=data_source,
            data_path=data_path,
            petl_method=petl_method,
            epochs=epochs,
            budgets=budgets,
            model_name=model_name,
        ).set_display_name("resolve parameters")
        common = dict(params=params, overrides=resolved.outputs["overrides"])
        tracked = dict(common, tracking_uri=tracking_uri, pipeline_run_id=run_id)

        prep = c.prepare_data(**tracked).set_display_name("prepare data")
        data = prep.outputs["data"]
        trained = {}
        for variant, title in TRAINED:
            trained[variant] = c.train_model(**tracked, variant=variant, data=data)
            trained[variant].set_display_name(title)
        dyn_model = trained["dyn"].outputs["model"]

        grid = c.sparsity_grid(**common).set_display_name("sparsity grid")
        with dsl.ParallelFor(
            grid.output, name="sparsity-candidates", parallelism=candidate_parallelism
        ) as item:
            tuned = c.sparsify_candidate(
                params=params,
                overrides=item.overrides,  # the resolved ones (see components.sparsity_grid)
                candidate=item.candidate,
                data=data,
                init_model=dyn_model,
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
        calibration = c.calibrate_thresholds(**tracked, model=model, data=data)
        calibration.set_display_name("calibrate risk-controlled exits")
        evaluation = c.evaluate_model(
            **tracked,
            model=model,
            thresholds=search.outputs["thresholds"],
            data=data,
            static_model=trained["static"].outputs["model"],
            probe_model=trained["probe"].outputs["model"],
            probe_thresholds=probe_search.outputs["thresholds"],
            risk_points=calibration.outputs["risk_points"],
        ).set_display_name("evaluate")
        registration = c.register_model(
            **tracked,
            model=model,
            thresholds=search.outputs["thresholds"],
            evaluation=evaluation.outputs["evaluation"],
            data=data,
            risk_points=calibration.outputs["risk_points"],
        ).set_display_name("register in MLflow")
        return Outputs(
            evaluation=evaluation.outputs["evaluation"],
            registration=registration.outputs["registration"],
        )

    return dyn_adapter_pipeline


def _get(params: dict[str, Any], key: str) -> Any:
    node: Any = params
    for part in key.split("."):
        node = node[part]
    return node
