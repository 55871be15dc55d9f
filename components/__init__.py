"""KFP v2 lightweight components: thin shells over the stage functions of ``dyn_adapter.stages``.

Each component imports ``dyn_adapter`` inside its body (the project image provides it; nothing
is pip-installed at run time) and only moves data between KFP artifacts and a step function.
Components are created by ``build(image)`` so the base image is a compile-time choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kfp import dsl

from dyn_adapter.mlops.names import DEFAULT_IMAGE

from .calibrate import calibrate_thresholds
from .evaluate import evaluate_model
from .prepare import prepare_data
from .register import register_model
from .run_form import resolve_params
from .search import search_thresholds
from .sparsify import sparsify_candidate, sparsify_select, sparsity_grid
from .train import train_model
from .vtab import task_overrides, vtab_table


@dataclass(frozen=True)
class Components:
    resolve_params: Any
    prepare_data: Any
    train_model: Any
    sparsity_grid: Any
    sparsify_candidate: Any
    sparsify_select: Any
    search_thresholds: Any
    calibrate_thresholds: Any
    evaluate_model: Any
    register_model: Any
    task_overrides: Any
    vtab_table: Any


def build(image: str = DEFAULT_IMAGE) -> Components:
    """Every component, on the project image ``image``."""

    def component(func: Any) -> Any:
        return dsl.component(func, base_image=image, install_kfp_package=False)

    return Components(
        resolve_params=component(resolve_params),
        prepare_data=component(prepare_data),
        train_model=component(train_model),
        sparsity_grid=component(sparsity_grid),
        sparsify_candidate=component(sparsify_candidate),
        sparsify_select=component(sparsify_select),
        search_thresholds=component(search_thresholds),
        calibrate_thresholds=component(calibrate_thresholds),
        evaluate_model=component(evaluate_model),
        register_model=component(register_model),
        task_overrides=component(task_overrides),
        vtab_table=component(vtab_table),
    )
