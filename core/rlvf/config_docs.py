"""The config schema as people read it: the reference page (examples/CONFIG.md), a commented starter config
(`rlvf init`) and a resolved config printed as TOML (`rlvf config`). Each key's description is the comment
written next to it (or just above it) in the module that declares its section (rlvf/config.py, or a plugin's),
so the schema stays the one place to document it."""

from __future__ import annotations

import ast
import inspect
import io
import tokenize
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rlvf.config import Config, RLConfig, combined_schema

REFERENCE_FILE = "examples/CONFIG.md"


def every_stage_schema(registry) -> type[BaseModel]:
    """One schema with every section of every registered stage, the core's and the plugins' (rlvf-rm's [rm])."""
    return combined_schema([Config, *(command.schema for command in registry.commands.values() if command.schema)],
                           name="EveryStage")


@cache
def field_comments(module_file: str) -> dict[tuple[str, str], str]:
    """(class name, field name) -> the comment on the field's line and the comment lines that continue it, or
    else the comment block just above it, for the classes of one module's source file."""
    source = Path(module_file).read_text()
    comments: dict[int, str] = {}
    continued: set[int] = set()  # comment lines aligned under the one before: `#       more of it`
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
            if token.string.startswith("#  "):
                continued.add(token.start[0])
    lines = source.splitlines()
    found = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            parts = []
            end = item.end_lineno or item.lineno
            if end in comments:
                parts.append(comments[end])
                following = end + 1
                while following in continued and lines[following - 1].lstrip().startswith("#"):
                    parts.append(comments[following])
                    following += 1
            else:
                above = item.lineno - 1
                while above in comments and lines[above - 1].lstrip().startswith("#"):
                    parts.insert(0, comments[above])
                    above -= 1
            found[(node.name, item.target.id)] = " ".join(part for part in parts if part)
    return found


def type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("none" if a is type(None) else type_name(a) for a in args)
    if origin in (list, tuple, dict):
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    if isinstance(value, BaseModel):
        return toml_value(value.model_dump())
    return repr(value)


def _key(name: str) -> str:
    return name if name.replace("_", "").replace("-", "").isalnum() else toml_value(name)


def _sections(schema: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """(dotted name, schema) of every section, depth first: ("", Config), ("model", ModelConfig), ..."""
    found = [(prefix, schema)]
    for name, field in schema.model_fields.items():
        optional = [a for a in typing.get_args(field.annotation) if a is not type(None)]
        section = field.annotation if _is_section(field.annotation) else \
            optional[0] if len(optional) == 1 and _is_section(optional[0]) else None  # X | None: [model.lora]
        if section is not None:
            found += _sections(section, f"{prefix}.{name}" if prefix else name)
    return found


def _owner(schema: type[BaseModel], field: str) -> type:
    """The class that declares `field` (a section may inherit it, e.g. [sft] from DatasetSource)."""
    for klass in schema.__mro__:
        if field in getattr(klass, "__annotations__", {}):
            return klass
    return schema


def field_comment(schema: type[BaseModel], field: str) -> str:
    """What the schema's source says of `field`: its comment (see field_comments)."""
    owner = _owner(schema, field)
    try:
        source = inspect.getsourcefile(owner)
    except TypeError:  # a class made at run time (config.combined_schema) has no source
        return ""
    return field_comments(source).get((owner.__name__, field), "") if source else ""


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def reference_markdown(schema: type[BaseModel] = Config) -> str:
    """Every key of the config (of every stage `schema` combines): type, default and what it does, one line each."""
    out = ["# Config reference", "",
           "Every key of an rlvf TOML config, generated from `core/rlvf/config.py` (`rlvf config --reference`;",
           "a test keeps this file in step). Any key can be overridden on the command line: `section.key=value`.",
           ""]
    for dotted, section in _sections(schema):
        doc = (section.__doc__ or "").strip()
        out.append(f"## `[{dotted}]`" if dotted else "## top level")
        out.append("")
        if doc and section.__doc__ != BaseModel.__doc__ and not doc.startswith("Usage docs"):
            out += [" ".join(doc.split()), ""]
        out += ["| key | type | default | description |", "|---|---|---|---|"]
        for name, field in section.model_fields.items():
            if _is_section(field.annotation):
                continue
            default = "none" if field.default is None else toml_value(field.default)
            description = field_comment(section, name).replace("|", "\\|")
            out.append(f"| `{name}` | {type_name(field.annotation)} | `{default}` | {description} |")
        out.append("")
    return "\n".join(out)


def to_toml(data: dict[str, Any], schema: type[BaseModel] = Config, comments: bool = False) -> str:
    """A config (as `model_dump()` gives it) as TOML; a key that is none is written as a comment."""
    lines: list[str] = []

    def emit(section: dict[str, Any], model: type[BaseModel], dotted: str) -> None:
        values, subsections = [], []
        for name, value in section.items():
            field = model.model_fields.get(name)
            if field is not None and _is_section(field.annotation):
                subsections.append((name, value, field.annotation))
                continue
            note = field_comment(model, name) if comments and field is not None else ""
            if comments and note:
                values.append(f"# {note}")
            values.append(f"# {name} = (none)" if value is None else f"{_key(name)} = {toml_value(value)}")
        if values:
            if dotted:
                lines.append(f"\n[{dotted}]")
            lines.extend(values)
        for name, value, annotation in subsections:
            emit(value, annotation, f"{dotted}.{name}" if dotted else name)

    emit(data, schema, "")
    return "\n".join(lines).lstrip("\n") + "\n"


def starter_config(task: str, default_rewards: dict[str, float]) -> str:
    """A commented config for `rlvf train` on `task`: every key of the RL run's sections (RLConfig) at its
    default."""
    data = RLConfig.model_validate({"task": {"name": task}}).model_dump()
    data["reward"]["mix"] = {name: {"weight": weight} for name, weight in default_rewards.items()}
    header = (f"# rlvf starter config for the task '{task}' (written by `rlvf init {task}`).\n"
              f"# Run it with `rlvf train THIS_FILE`; every key is listed in {REFERENCE_FILE}\n"
              "# (`rlvf config --reference`). Delete what you do not change: a missing key takes its default.\n\n")
    return header + to_toml(data, RLConfig, comments=True)
