"""The run's parameters, resolved and validated once, before any work starts."""

from typing import NamedTuple


def resolve_params(
    params: dict,
    overrides: list,
    data_source: str,
    data_path: str,
    petl_method: str,
    epochs: int,
    budgets: list,
    model_name: str,
) -> NamedTuple("Resolved", [("overrides", list)]):  # type: ignore[valid-type]
    """The run form's fields over ``params``, then ``overrides``: the overrides every other
    task applies. Bad input fails this first task with a one-line error.

    The output is named, not KFP's default ``Output``: the local runner confuses a default
    ``Output`` list passed into a ParallelFor with the loop's own items."""
    from collections import namedtuple

    from components import shim

    form = dict(
        data_source=data_source,
        data_path=data_path,
        petl_method=petl_method,
        epochs=epochs,
        budgets=budgets,
        model_name=model_name,
    )
    with shim.user_errors("pipeline"):
        merged = shim.run_form_overrides(params, overrides, form)
    return namedtuple("Resolved", ["overrides"])(merged)
