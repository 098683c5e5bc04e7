"""The one code-hash function: for Dagster's code versions and for resuming training.

A module's fingerprint hashes its parsed code, so comments, docstrings and formatting do not
count. Which modules count for a piece of code is derived from its imports: the closure of
the project modules (`gamerec_assets.*`) it imports, directly or through each other.
"""

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PROJECT_PACKAGE = "gamerec_assets"


def code_fingerprint(source: str) -> str:
    """Hash of Python source as code: comments, docstrings and formatting do not count."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:12]


PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def _module_file(module: str) -> Path | None:
    """The source file of a project module, found without importing anything."""
    parts = module.split(".")
    if parts[0] != PROJECT_PACKAGE:
        return None
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def _source(module: str) -> tuple[str, bool]:
    """(source text, whether it is a package's __init__) of a project module."""
    path = _module_file(module)
    if path is None:
        raise ValueError(f"cannot find the source of module {module}")
    return path.read_text(encoding="utf-8"), path.name == "__init__.py"


@cache
def module_fingerprint(module: str) -> str:
    return code_fingerprint(_source(module)[0])


@cache
def project_imports(module: str) -> frozenset[str]:
    """The project modules `module` imports (absolute or relative, at any depth of its code)."""
    source, is_package = _source(module)
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if _is_project_module(name)}
    return frozenset(found - {module})


def _is_project_module(name: str) -> bool:
    return _module_file(name) is not None


@cache
def import_closure(roots: tuple[str, ...]) -> tuple[str, ...]:
    """`roots` and every project module they import, directly or not, sorted."""
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        module = pending.pop()
        if module not in seen:
            seen.add(module)
            pending.extend(project_imports(module))
    return tuple(sorted(seen))


def code_versions(roots: Iterable[str]) -> dict[str, str]:
    """module -> fingerprint for `roots` and everything they import from the project."""
    return {module: module_fingerprint(module) for module in import_closure(tuple(roots))}


def modules_fingerprint(roots: Iterable[str]) -> str:
    """One hash of the code of `roots` and of everything they import from the project."""
    versions = code_versions(roots)
    return hashlib.sha256(repr(sorted(versions.items())).encode()).hexdigest()[:16]
