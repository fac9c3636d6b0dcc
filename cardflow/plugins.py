"""Loading user code named by a path: ``package.module`` or ``package.module:attribute``."""

from __future__ import annotations

import importlib
from typing import Any


def objects_at(path: str, setting: str) -> list[Any]:
    """The named attribute, or every object a module defines (not ones it imports).

    Raises ImportError naming ``setting`` when the module cannot be imported.
    """
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"module {module_name!r} cannot be imported ({exc}); check {setting} "
                          "and that the module is on PYTHONPATH") from exc
    if attr:
        return [getattr(module, attr, None)]
    own = [v for v in vars(module).values() if getattr(v, "__module__", None) == module.__name__]
    # Instances (such as profile scripts) have the class's module; keep those defined here too.
    return own + [v for v in vars(module).values() if v not in own and not isinstance(v, type)]
