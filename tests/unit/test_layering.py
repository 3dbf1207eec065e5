"""The package's wiring, read from its source: who may import what, and one place for overrides.

docs/architecture.md states these rules; this proves them on every run.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from esp32tasks import config

PACKAGE = Path(__file__).resolve().parents[2] / "esp32tasks"
README = PACKAGE.parent / "README.md"
CORE = {"errors", "files", "runcache", "deadline", "config", "gitinfo", "plan", "receiptfile",
        "receipts", "oci", "images", "version", "bundle", "summary", "secureboot", "delta",
        "interrupts", "__init__"}
ROOMS = ("build", "registry", "sign", "store", "tasks")


def modules() -> dict[str, Path]:
    """``esp32tasks.x.y`` -> its file."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, name: str) -> set[str]:
    """Every module ``path`` imports (top level or inside functions), absolute names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def ours(names: set[str], known: dict[str, Path]) -> set[str]:
    return {n for n in names if n in known and n != "esp32tasks"}


def room(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else "core"


def test_only_tasks_imports_doit() -> None:
    offenders = {name for name, path in modules().items()
                 if room(name) != "tasks"
                 and any(i == "doit" or i.startswith("doit.") for i in imports(path, name))}
    assert offenders == set()


def test_no_arrow_back_up() -> None:
    """Core imports no room; rooms import core and not tasks; only tasks sees every room."""
    known = modules()
    arrows = set()
    for name, path in known.items():
        for target in ours(imports(path, name), known):
            source_room, target_room = room(name), room(target)
            if target_room in (source_room, "core"):
                continue
            if source_room != "tasks":
                arrows.add(f"{name} -> {target}")
    # store.upload reads the release check from store.manifest (same room); registry and
    # store never see each other, and nothing below tasks sees tasks
    assert arrows == set()


def test_no_import_circles() -> None:
    known = modules()
    graph = {name: ours(imports(path, name), known) - {name} for name, path in known.items()}
    # a package imports its own submodules to re-export them: not a circle of ours
    for name, targets in graph.items():
        if known[name].name == "__init__.py":
            targets.difference_update({t for t in targets if t.startswith(name + ".")})

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(graph[start])
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(graph.get(current, ()))
        return seen

    circles = sorted(name for name in graph if name in reach(name))
    assert circles == []


def test_core_is_the_listed_modules() -> None:
    core = {path.stem for path in PACKAGE.glob("*.py")}
    assert core == CORE
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} \
        == set(ROOMS)


def test_overrides_are_read_in_config_only() -> None:
    texts = {name: path.read_text() for name, path in modules().items()}
    # the session hands the environment and doit's parameters to config; builders pass the
    # environment on to builds (minus our secrets); credential helpers get it as docker
    # gives it; a signing key's own variable is read when it signs. Nobody else looks.
    assert {n for n, t in texts.items() if "os.environ" in t} == {
        "esp32tasks.config", "esp32tasks.tasks.session", "esp32tasks.build.builders",
        "esp32tasks.registry.credentials", "esp32tasks.sign.action"}
    assert {n for n, t in texts.items() if "get_var(" in t} == {"esp32tasks.tasks.session"}
    ours_read = re.compile(r"""environ(?:\.get\(|\[)["']ESP32TASKS_""")
    assert {n for n, t in texts.items() if ours_read.search(t)} == {"esp32tasks.config"}


def test_every_variable_is_in_the_readme_table_and_every_row_is_real() -> None:
    rows = re.findall(r"^\| `(ESP32TASKS_[A-Z_]+)` \|", README.read_text(), re.MULTILINE)
    assert sorted(rows) == sorted(config.VARIABLES)
    used = set()
    for path in modules().values():
        used.update(re.findall(r"ESP32TASKS_[A-Z_]+[A-Z]", path.read_text()))
    assert used <= set(config.VARIABLES) | set(config.SIGNER_VARIABLES)
    assert all(f"`{name}`" in README.read_text() for name in config.SIGNER_VARIABLES)
    parameters = re.findall(r"^\| `doit release (\w+)=", README.read_text(), re.MULTILINE)
    assert parameters == list(config.CLI_PARAMETERS)
