"""Packages whose names load on first use (PEP 562), so that importing one of their light
modules (a config) does not import torch through the package's ``__init__``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """The package's ``__getattr__``: ``name`` from its submodule ``where[name]``, kept once
    loaded. ``where`` must be the package's ``_WHERE`` literal: the DVC import walk reads it."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{where[name]}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
