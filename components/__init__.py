"""KFP v2 lightweight components: thin shells over the stage functions of ``dyn_adapter.stages``.

Each component imports ``dyn_adapter`` inside its body (the project image provides it; nothing
is pip-installed at run time) and only moves data between KFP artifacts and a step function.
Components are created by ``build(image)`` so the base image is a compile-time choice; every
module here but ``shim`` holds components, found by ``functions()``, so a new stage's component
is its module and nothing else here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from types import SimpleNamespace

from kfp import dsl

from dyn_adapter.mlops.names import DEFAULT_IMAGE

# Modules of this package that hold helpers for the components' bodies, not components.
HELPERS = ("shim",)


def functions() -> list[Callable]:
    """Every component function: each public function defined in a module of this package
    (a stage's component is its module here; ``shim`` aside), by module, then in file order."""
    found: list[Callable] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name in HELPERS:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found += sorted(
            (
                f
                for name, f in inspect.getmembers(module, inspect.isfunction)
                if f.__module__ == module.__name__ and not name.startswith("_")
            ),
            key=lambda f: f.__code__.co_firstlineno,
        )
    return found


def build(image: str = DEFAULT_IMAGE) -> SimpleNamespace:
    """Every component of :func:`functions`, on the project image ``image``, by function name
    (``build(image).train_model``)."""
    return SimpleNamespace(
        **{
            f.__name__: dsl.component(f, base_image=image, install_kfp_package=False)
            for f in functions()
        }
    )
