"""Plugins and tasks use rlvf only through its declared plugin API: `rlvf.api` (and `hookimpl` from `rlvf`).
Anything else in rlvf is internal; a plugin needing more asks for it to be exported by rlvf.api."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

ALLOWED_MODULES = {"rlvf", "rlvf.api"}
ALLOWED_FROM_RLVF = {"hookimpl", "api"}  # `from rlvf import hookimpl` / `from rlvf import api`


def distributions() -> list[Path]:
    """Every distribution under plugins/ and tasks/: a directory holding a pyproject.toml."""
    found = [path.parent for root in ("plugins", "tasks") for path in (REPO / root).glob("**/pyproject.toml")]
    return sorted(found)


def source_files(distribution: Path) -> list[Path]:
    skipped = {"build", "dist", "__pycache__", ".venv"}
    return sorted(path for path in distribution.rglob("*.py")
                  if not skipped & set(path.relative_to(distribution).parts)
                  and not any(part.endswith(".egg-info") for part in path.parts))


def internal_imports(path: Path) -> list[str]:
    """`file:line: import` for each import of an rlvf module other than rlvf and rlvf.api."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            bad = [alias.name for alias in node.names
                   if alias.name.split(".")[0] == "rlvf" and alias.name not in ALLOWED_MODULES]
            found += [f"{path}:{node.lineno}: import {name}" for name in bad]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "rlvf":
                continue
            if node.module == "rlvf":
                bad = [alias.name for alias in node.names if alias.name not in ALLOWED_FROM_RLVF]
                found += [f"{path}:{node.lineno}: from rlvf import {name}" for name in bad]
            elif node.module not in ALLOWED_MODULES:
                names = ", ".join(alias.name for alias in node.names)
                found.append(f"{path}:{node.lineno}: from {node.module} import {names}")
    return sorted(found, key=lambda line: int(line.removeprefix(f"{path}:").split(":")[0]))


def test_plugins_and_tasks_import_only_the_plugin_api():
    dists = distributions()
    assert {"rlvf-judge", "rlvf-rm", "tasks"} <= {d.name for d in dists}
    files = [path for distribution in dists for path in source_files(distribution)]
    assert any(path.name == "plugin.py" for path in files)
    found = [line for path in files for line in internal_imports(path)]
    assert not found, ("plugins and tasks may import only rlvf.api (and hookimpl from rlvf); export what they need "
                       "in core/rlvf/api/__init__.py:\n" + "\n".join(found))


def test_the_check_names_each_internal_import_with_its_file_and_line(tmp_path):
    module = tmp_path / "plugin.py"
    module.write_text("import rlvf\nfrom rlvf import hookimpl\nfrom rlvf.api import RewardError\nimport rlvf.api\n"
                      "import rlvf_judge.judging\nfrom . import reward\n"
                      "def build():\n    from rlvf.models.loading import load_policy\n"
                      "import rlvf.config\nfrom rlvf import config, hookimpl\n")
    assert internal_imports(module) == [f"{module}:8: from rlvf.models.loading import load_policy",
                                        f"{module}:9: import rlvf.config",
                                        f"{module}:10: from rlvf import config"]
