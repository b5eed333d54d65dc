"""Lazy package attributes (PEP 562): names that load their submodule on first access.

A package whose submodules import torch lists them here so that importing the package itself
stays cheap for the driver (spec validation, planning), while ``from package import name``
keeps working everywhere else.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_attributes(
    package: str, submodule_of: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: each name in ``submodule_of`` (name ->
    submodule defining it) is imported on first access and then cached on the package."""

    def module_getattr(name: str) -> Any:
        if name not in submodule_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{submodule_of[name]}"), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip __getattr__
        return value

    def module_dir() -> list[str]:
        return sorted({*vars(sys.modules[package]), *submodule_of})

    return module_getattr, module_dir
