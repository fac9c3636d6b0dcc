"""Loading user code named by a path: ``package.module``, ``package.module:attribute``, or a
path on disk holding a ``/`` or ending in ``.py``: a file, or a directory whose ``*.py`` files
are loaded in name order."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any


def objects_at(path: str, setting: str) -> list[Any]:
    """The named attribute, or every object a module defines (not ones it imports).

    Raises ImportError naming ``setting`` when the module cannot be imported.
    """
    if path.endswith(".py") or "/" in path:  # a file or directory (write ./cards for one in cwd)
        return [obj for module in _files(path, setting) for obj in _own(module)]
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"module {module_name!r} cannot be imported ({exc}); check {setting} "
                          "and that the module is on PYTHONPATH") from exc
    if attr:
        return [getattr(module, attr, None)]
    return _own(module)


def load_named(paths: Iterable[str], kind: type, setting: str, what: str, error: type[Exception],
               hint: str) -> dict[str, Any]:
    """Every ``kind`` object the ``paths`` hold, by its ``name``: an error (``error``) when a path
    cannot be imported, holds none (``hint`` says how to make one), or two share a name."""
    named: dict[str, Any] = {}
    for path in paths:
        try:
            found: list[Any] = [obj for obj in objects_at(path, setting) if isinstance(obj, kind)]
        except ImportError as exc:
            raise error(f"{what} {exc}") from exc
        if not found:
            raise error(f"{path!r} holds no {kind.__name__} ({hint})")
        for obj in found:
            if obj.name in named and named[obj.name] is not obj:
                raise error(f"two {what}s are named {obj.name!r}")
            named[obj.name] = obj
    return named


def _files(path: str, setting: str) -> list[ModuleType]:
    where = Path(path).expanduser()
    if not where.exists():
        raise ImportError(f"{path!r} does not exist; check {setting}")
    files = sorted(where.glob("*.py")) if where.is_dir() else [where]
    modules = []
    for file in files:
        # A stable, unique module name per file, so classes pickle and reload the same way.
        name = f"cardflow_user_{file.stem}_{hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:8]}"
        if name in sys.modules:
            modules.append(sys.modules[name])
            continue
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise ImportError(f"{file} cannot be loaded as Python; check {setting}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise ImportError(f"{file} failed to load ({type(exc).__name__}: {exc}); "
                              f"check {setting}") from exc
        modules.append(module)
    return modules


def _own(module: ModuleType) -> list[Any]:
    own = [v for v in vars(module).values() if getattr(v, "__module__", None) == module.__name__]
    # Instances (such as profile scripts) have the class's module; keep those defined here too.
    return own + [v for v in vars(module).values() if v not in own and not isinstance(v, type)]
