"""Evaluation component: real dynamic inference on the test split, plots, model card."""

from kfp.dsl import (
    HTML,
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)


def evaluate_model(
    params: dict,
    overrides: list,
    model: Input[Model],
    thresholds: Input[Artifact],
    data: Input[Dataset],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    plot: Output[HTML],
    model_card: Output[Markdown],
    static_model: Input[Model] = None,
    probe_model: Input[Model] = None,
    probe_thresholds: Input[Artifact] = None,
    risk_points: Input[Artifact] = None,
    task_name: str = "",
    tracking_uri: str = "",
    pipeline_run_id: str = "",
):
    """Accuracy, GFLOPs and time per budget against the static PETL and frozen-probe baselines,
    and the realised risk of each risk-controlled point."""
    import shutil

    from components import shim
    from dyn_adapter.artifacts import MODEL_DIR, Evaluation
    from dyn_adapter.stages import evaluate

    with shim.user_errors("evaluate"):
        p = shim.load(params, overrides)
        evaluate.run(
            p,
            f"{model.path}/{MODEL_DIR}",
            thresholds.path,
            data.path,
            evaluation.path,
            static_dir=static_model.path if static_model else None,
            probe_model_dir=f"{probe_model.path}/{MODEL_DIR}" if probe_model else None,
            probe_search_dir=probe_thresholds.path if probe_thresholds else None,
            task_name=task_name,
            risk_dir=risk_points.path if risk_points else None,
        )
        result = Evaluation(evaluation.path)
        for name, value in result.headline().items():
            metrics.log_metric(name, value)
        confusion.log_confusion_matrix(*result.confusion())
        with open(plot.path, "w") as f:
            f.write(shim.plot_html(result.accuracy_plot))
        shutil.copyfile(result.card_path, model_card.path)
        stage = f"evaluate{task_name and '-' + task_name}"
        shim.track(stage, evaluation.path, p, tracking_uri, pipeline_run_id, data.path)
