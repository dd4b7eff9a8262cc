"""`rlvf new-plugin NAME [--environment]`: a ready-to-install plugin package with one reward (or, with
`--environment`, one multi-turn environment) and its tests."""

from __future__ import annotations

import re
from pathlib import Path

from rlvf.errors import ConfigError

TEMPLATE_DIR = Path(__file__).parent / "plugin_template"
# template file -> path in the new package ({{module}} is filled in too), for each kind of plugin
LAYOUTS = {
    "reward": {
        "pyproject.toml.tmpl": "pyproject.toml",
        "README.md.tmpl": "README.md",
        "plugin.py.tmpl": "{{module}}/plugin.py",
        "test_plugin.py.tmpl": "tests/test_{{module}}.py",
    },
    "environment": {
        "pyproject.toml.tmpl": "pyproject.toml",
        "README_environment.md.tmpl": "README.md",
        "environment_plugin.py.tmpl": "{{module}}/plugin.py",
        "test_environment_plugin.py.tmpl": "tests/test_{{module}}.py",
    },
}


def write_plugin(name: str, parent: Path, environment: bool = False) -> Path:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConfigError(f"plugin name {name!r}: use lower-case letters, digits and '_' (a Python identifier)")
    kind = "environment" if environment else "reward"
    values = {"name": name, "distribution": f"rlvf-{name.replace('_', '-')}", "module": f"rlvf_{name}",
              "kind": kind, "class": "".join(part.capitalize() for part in name.split("_"))}

    def fill(text: str) -> str:
        return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m[1]], text)

    root = parent / values["distribution"]
    if root.exists():
        raise ConfigError(f"{root} already exists; choose another name or --directory")
    for template, target in LAYOUTS[kind].items():
        path = root / fill(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(fill((TEMPLATE_DIR / template).read_text()))
    (root / values["module"] / "__init__.py").write_text("")
    return root
