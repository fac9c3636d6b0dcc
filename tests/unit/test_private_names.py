"""Private names of faust, aiokafka and mode are used in the batch runtime (cardflow/batches.py)
and nowhere else in cardflow: an upgrade then has one module to re-check."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("cardflow", "agents", "topologies", "connectors")
RUNTIME = ROOT / "cardflow" / "batches.py"
LIBRARIES = ("faust", "aiokafka", "mode")
# Internals that do not start with an underscore: Faust's rocksdb store and app, by name.
EXTENSION_POINTS = ("faust.web.View",)
NAMED_INTERNALS = ("partition_path", "in_recovery", "__faust", "ack_lock", "_db_for_partition")


def _our_files() -> list[Path]:
    return sorted(p for d in SOURCES for p in (ROOT / d).rglob("*.py"))


def _private_names_of(library: str) -> set[str]:
    """Underscore names a library defines: methods, attributes set on self, module globals."""
    module = importlib.import_module(library)
    assert module.__file__ is not None
    names: set[str] = set()
    pattern = re.compile(r"(?:def |self\.|^)(_[a-z]\w*)\s*[(=:]", re.M)
    for path in Path(module.__file__).parent.rglob("*.py"):
        names.update(pattern.findall(path.read_text(errors="replace")))
    return names


def _ours(files: list[Path]) -> set[str]:
    """Underscore names cardflow defines itself (its own privates are its business)."""
    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return names


def _library_names(tree: ast.AST) -> set[str]:
    """Names a module binds to faust, aiokafka or mode (``import faust``, ``from mode import X``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names
                         if a.name.split(".")[0] in LIBRARIES)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
            names.update(a.asname or a.name for a in node.names)
    return names


def _uses(path: Path, private: set[str]) -> list[str]:
    """Private library names ``path`` uses: on any object but ``self`` (its own class's, unless
    that class derives from a library class, which is reported), in imports, or by name."""
    found = []
    tree = ast.parse(path.read_text())
    library = _library_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            # Faust's class-based web views are its documented extension point (POST handlers): allowed,
            # as long as the class touches no private name on self either.
            extension = all(ast.unparse(b) in EXTENSION_POINTS for b in node.bases)
            bases = [ast.unparse(b).split(".")[0] for b in node.bases]
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: class {node.name} derives from {b}"
                      for b in bases if b in library and not extension]
            found += [f"{path.relative_to(ROOT)}:{inner.lineno}: self.{inner.attr} in a {node.name} view"
                      for inner in ast.walk(node) if extension and isinstance(inner, ast.Attribute)
                      and inner.attr in private and isinstance(inner.value, ast.Name)
                      and inner.value.id == "self"]
        elif (isinstance(node, ast.Attribute) and node.attr in private
              and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: import {node.module}.{a.name}"
                      for a in node.names if a.name.startswith("_")]
            if "._" in "." + (node.module or ""):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: import from {node.module}")
    text = path.read_text()
    found += [f"{path.relative_to(ROOT)}: {name}" for name in NAMED_INTERNALS if name in text]
    return found


def test_private_library_names_appear_in_the_batch_runtime_only() -> None:
    files = _our_files()
    others = [p for p in files if p != RUNTIME]
    private = set().union(*map(_private_names_of, LIBRARIES)) - _ours(others)
    assert [use for path in others for use in _uses(path, private)] == []
    # ... and the check finds what the runtime does use (it would catch a use elsewhere).
    runtime_uses = _uses(RUNTIME, private)
    assert any("._fetcher" in u for u in runtime_uses)  # consumer._fetcher
    assert any("_db_for_partition" in u for u in runtime_uses)
    assert any("derives from AIOKafkaConsumer" in u for u in runtime_uses)
