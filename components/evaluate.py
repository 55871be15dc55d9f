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
    task_name: str = "",
    tracking_uri: str = "",
    pipeline_run_id: str = "",
):
    """Accuracy, GFLOPs and time per budget against the static PETL and frozen-probe baselines."""
    import shutil

    from dyn_adapter import steps

    with steps.user_errors("evaluate"):
        headline = steps.evaluate(
            params,
            overrides,
            model.path,
            thresholds.path,
            data.path,
            evaluation.path,
            static_model=static_model.path if static_model else None,
            probe_model=probe_model.path if probe_model else None,
            probe_thresholds=probe_thresholds.path if probe_thresholds else None,
            task_name=task_name,
        )
        for name, value in headline.items():
            metrics.log_metric(name, value)
        classes, matrix = steps.confusion(evaluation.path)
        confusion.log_confusion_matrix(classes, matrix)
        with open(plot.path, "w") as f:
            f.write(steps.plot_html(evaluation.path))
        shutil.copyfile(f"{evaluation.path}/model_card.md", model_card.path)
        steps.track(
            f"evaluate{task_name and '-' + task_name}",
            evaluation.path,
            params,
            overrides,
            tracking_uri,
            pipeline_run_id,
        )
