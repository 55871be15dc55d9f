"""KFP v2 lightweight components: thin shells over the stage functions of ``dyn_adapter.stages``.

Each component imports ``dyn_adapter`` inside its body (the project image provides it; nothing
is pip-installed at run time) and only moves data between KFP artifacts and a step function.
Components are created by ``build(image)`` so the base image is a compile-time choice.
"""

from __future__ import annotations

from types import SimpleNamespace

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

# Every component function; ``build`` makes each one a component under its own name.
FUNCTIONS = (
    resolve_params,
    prepare_data,
    train_model,
    sparsity_grid,
    sparsify_candidate,
    sparsify_select,
    search_thresholds,
    calibrate_thresholds,
    evaluate_model,
    register_model,
    task_overrides,
    vtab_table,
)


def build(image: str = DEFAULT_IMAGE) -> SimpleNamespace:
    """Every component of :data:`FUNCTIONS`, on the project image ``image``, by function name
    (``build(image).train_model``)."""
    return SimpleNamespace(
        **{
            f.__name__: dsl.component(f, base_image=image, install_kfp_package=False)
            for f in FUNCTIONS
        }
    )
