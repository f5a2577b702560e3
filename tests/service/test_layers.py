"""The layers of service/ and workers/, checked on their import statements (read with ``ast``,
imports inside functions included):

- the core is used through its public face only: ``from quantcore import NAME`` with NAME in
  ``quantcore.__all__``, never ``quantcore.<submodule>``;
- SQL lives in the store: SQLAlchemy is imported only under ``service/store/`` (and by the
  embedded broker's transport, which is kombu's SQLAlchemy transport, and by the SQLite
  helper those two share, ``service/sqlite_wal.py``: neither may import the other);
- no layer imports upwards: settings, logging and errors import no other layer; the store and
  the queue import neither the API nor the CLI nor the web framework; the workers import
  neither the API nor the CLI.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import quantcore

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(ROOT / "service").rglob("*.py"), *(ROOT / "workers").rglob("*.py")])
WEB = ("fastapi", "starlette", "uvicorn", "python_multipart", "multipart")
SQL_ALLOWED = ("service/store/", "service/queue/sqlite_broker.py", "service/sqlite_wal.py")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(path: Path) -> str:
    module = _module(path)
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports(path: Path) -> Iterator[tuple[str, str | None, int]]:
    """(module, imported name or None, line) of every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = _package(path).split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, module] if module else base)
            for alias in node.names:
                yield module, alias.name, node.lineno


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def _under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_sources_are_found() -> None:
    names = {_module(p) for p in SOURCES}
    assert {"service.store.jobs", "service.queue.enqueue", "service.api.app",
            "service.cli.main", "workers.tasks"} <= names


def test_only_the_public_face_of_the_core_is_imported() -> None:
    public = set(quantcore.__all__)
    found = []
    for path in SOURCES:
        for module, name, line in imports(path):
            if module.startswith("quantcore."):
                found.append(f"{_where(path, line)}: {module}")
            elif module == "quantcore" and name is not None and name not in public:
                found.append(f"{_where(path, line)}: quantcore.{name} is not public")
    assert not found, "\n".join(found)


def test_sql_is_imported_only_by_the_store() -> None:
    found = []
    for path in SOURCES:
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith(SQL_ALLOWED):
            continue
        for module, _, line in imports(path):
            if _under(module, "sqlalchemy", "alembic", "psycopg", "sqlite3"):
                found.append(f"{_where(path, line)}: {module}")
    assert not found, "\n".join(found)


# What each layer must not import (its own modules and those of the layers below excepted).
FORBIDDEN: dict[tuple[str, ...], tuple[str, ...]] = {
    ("service.settings", "service.logging", "service.errors"): (
        "service.store", "service.queue", "service.api", "service.cli", "workers", *WEB,
    ),
    ("service.store", "service.queue"): ("service.api", "service.cli", "workers", *WEB),
    ("workers",): ("service.api", "service.cli", *WEB),
}


@pytest.mark.parametrize("layer", list(FORBIDDEN), ids=lambda layer: "+".join(layer))
def test_no_layer_imports_upwards(layer: tuple[str, ...]) -> None:
    found = []
    checked = 0
    for path in SOURCES:
        if not _under(_module(path), *layer):
            continue
        checked += 1
        for module, _, line in imports(path):
            if _under(module, *FORBIDDEN[layer]):
                found.append(f"{_where(path, line)}: {module}")
    assert checked, f"no module of {layer}"
    assert not found, "\n".join(found)


def test_the_store_and_the_queue_do_not_import_each_other() -> None:
    found = []
    for path in SOURCES:
        module = _module(path)
        other = ("service.queue" if _under(module, "service.store")
                 else "service.store" if _under(module, "service.queue") else None)
        if other is None:
            continue
        found += [f"{_where(path, line)}: {m}" for m, _, line in imports(path) if _under(m, other)]
    assert not found, "\n".join(found)
