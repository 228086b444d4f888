"""What code a piece of compress runs: a module and everything it imports from the package,
followed statically (module-level and lazy imports alike), each file digested by its syntax tree.

Why: a stage's outputs depend on its code as much as on its settings. A stage key that hashed
only config, data and inputs served results of old code after an upgrade that fixed, say, the
exporter ("all stages up to date"). DVC keys a stage by its code the same way. The syntax tree,
not the bytes, is hashed, so comments and formatting never invalidate a cache; any change of
code, docstrings included, does. Works the same for a source tree and an installed release (the
files are in site-packages either way).
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
from pathlib import Path

PACKAGE = "compress"


@functools.cache
def _root() -> Path:
    """The folder holding the package's __init__.py (the repository root, or site-packages/compress)."""
    spec = importlib.util.find_spec(PACKAGE)
    assert spec and spec.origin
    return Path(spec.origin).parent


def _source_file(module: str) -> Path | None:
    """The file of a compress module, found on disk without importing anything; None for a name
    that is not a module (`from compress.core.config import Config` names a class)."""
    parts = module.split(".")[1:]
    base = _root().joinpath(*parts)
    for candidate in (base.with_suffix(".py") if parts else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


@functools.cache
def _parsed(path: Path, mtime_ns: int) -> tuple[str, tuple[str, ...]]:
    """(digest of the file's syntax tree, the compress modules it imports), cached per file version."""
    tree = ast.parse(path.read_text(), str(path))
    digest = hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()
    imported: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [a.name for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
            imported.append(node.module)
            imported += [f"{node.module}.{a.name}" for a in node.names]  # `from compress.x import submodule`
    return digest, tuple(imported)


def _relative(path: Path) -> str:
    return path.relative_to(_root()).as_posix()


def code_files(module: str) -> dict[str, str]:
    """{path inside the package: digest} of `module` and every compress module it imports, transitively."""
    seen: dict[str, str] = {}
    todo, visited = [module], set()
    while todo:
        name = todo.pop()
        if name in visited:
            continue
        visited.add(name)
        path = _source_file(name)
        if path is None:
            continue
        parents = name.split(".")
        todo += [".".join(parents[:i]) for i in range(2, len(parents))]  # packages run their __init__ first
        digest, imported = _parsed(path, path.stat().st_mtime_ns)
        seen[_relative(path)] = digest
        todo += [m for m in imported if m not in visited]
    return dict(sorted(seen.items()))


def changed(before: dict[str, str], now: dict[str, str]) -> list[str]:
    """The files whose code differs between two `code_files` results (added and removed ones too)."""
    return sorted(f for f in set(before) | set(now) if before.get(f) != now.get(f))
