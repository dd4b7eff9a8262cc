"""Tasks: where prompts come from.

A task yields rows: a `prompt` (text, or chat messages when `chat` is on) plus the columns its rewards
read (`answer`, `tests`, ...). Plugins register `Task` subclasses that override `load`; users declare a
`DatasetTask` in config from any `datasets` source, with no code. With no template, a row's own `prompt`
column (TRL's format: a string, or chat messages) is the prompt.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rlvf.errors import ConfigError

SPLITS = ("train", "eval")


class Task:
    """A source of prompts with the columns its rewards need.

    Subclasses set the class attributes and override `load(split)`, which yields raw rows (dicts). Their
    `options` (with defaults) can be changed from config; `load` reads them from `self.options`.
    """

    name: str = ""
    description: str = ""
    # The user message, formatted with the row's columns; None: the row's `prompt` column as it is (TRL's
    # format), or "{question}" when rows have no `prompt`.
    template: str | None = "{question}"
    system_prompt: str | None = None
    few_shot: list[tuple[str, str]] = []  # (user, assistant) example turns placed before the question
    chat: bool = True  # prompts as chat messages (the trainer applies the model's chat template)
    default_rewards: dict[str, float] = {}
    default_environment: str | None = None  # a registered environment its episodes run in (rlvf.api.environments)
    options: dict[str, Any] = {}
    plugin: str = ""  # set by the registry: which distribution registered the task
    # the configured Environment (task_from_config: [task] environment, else default_environment); None: one
    # completion per prompt
    environment = None

    def load(self, split: str) -> Iterable[dict[str, Any]]:
        raise NotImplementedError(f"task '{self.name}' does not implement load(split)")

    def configured(self, **options: Any) -> Task:
        """A copy with some options changed; unknown option names are rejected."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ConfigError(f"task '{self.name}' has no option {', '.join(map(repr, unknown))}; "
                              f"its options are: {', '.join(sorted(self.options)) or 'none'}")
        task = copy.copy(self)
        task.options = {**self.options, **options}
        return task

    def rows(self, split: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Rows of a split with `prompt` built from the template; the raw columns are kept."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split '{split}' for task '{self.name}'; use one of {', '.join(SPLITS)}")
        out = []
        for index, row in enumerate(self.load(split)):
            if limit is not None and index >= limit:
                break
            out.append({**row, "prompt": self.format_prompt(row)})
        return out

    def where(self) -> str:
        """How messages name this task: "task 'my-qa' (data/qa.jsonl)", or "task 'arithmetic'"."""
        source = getattr(self, "dataset", None)
        return f"task '{self.name}'" + (f" ({source})" if source else "")

    def format_prompt(self, row: dict[str, Any]) -> str | list[dict[str, str]]:
        """The row's prompt: the template filled from its columns, or (no template) its own `prompt` column,
        with the system prompt and few-shot turns placed before it."""
        if self.template is None and "prompt" in row:
            question = row["prompt"]
            if is_messages(question):  # chat messages, used as they are after any configured system/few-shot turns
                if not self.chat:
                    raise ConfigError(f"{self.where()}: the 'prompt' column holds chat messages, but chat = false; "
                                      "set chat = true or give a template")
                return [*self._preamble_messages(), *(dict(m) for m in question)]
            if not isinstance(question, str):
                raise ConfigError(f"{self.where()}: the 'prompt' column must be a string or a list of "
                                  f"{{\"role\", \"content\"}} messages, got {type(question).__name__}: "
                                  f"{str(question)[:80]}")
        else:
            question = fill_template(self.template or "{question}", row, where=f"{self.where()}: ")
        if not self.chat:
            parts = [self.system_prompt] if self.system_prompt else []
            parts += [f"{user}\n{assistant}" for user, assistant in self.few_shot]
            return "\n\n".join([*parts, question])
        return [*self._preamble_messages(), {"role": "user", "content": question}]

    def _preamble_messages(self) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        for user, assistant in self.few_shot:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return messages


def is_messages(value: Any) -> bool:
    """Whether a value is chat messages: a non-empty list of {"role", "content"} dicts."""
    return (isinstance(value, (list, tuple)) and bool(value)
            and all(isinstance(m, dict) and "role" in m and "content" in m for m in value))


_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")
# Braces that are LaTeX, not placeholders: an argument of a command (`\\text{cm}`, `\\frac{a}{b}`), a super- or
# subscript (`x^{n}`), or a group inside another (`{{n}}` outside a column).
_LATEX_BEFORE = re.compile(r"(\\[A-Za-z]+|[}^_])\s*$")


def fill_template(template: str, row: dict[str, Any], where: str = "") -> str:
    """Replace `{column}` with the row's value. Braces that are not `{identifier}` stay as they are, and so do
    LaTeX arguments (`\\text{cm}`, `x^{n}`, `\\frac{a}{b}`), so LaTeX such as `\\boxed{}` needs no escaping. Any
    other `{identifier}` that is not a column of the row is an error (a typo would otherwise reach the model
    as a literal `{question}`); `where` prefixes its message (e.g. "task 'my-qa' (data/qa.jsonl): ")."""
    def fill(match: re.Match) -> str:
        name = match[1]
        if name in row:
            return str(row[name])
        if _LATEX_BEFORE.search(template, 0, match.start()):
            return match[0]
        have = ", ".join(sorted(str(key) for key in row)) or "none"
        raise ConfigError(f"{where}template placeholder '{{{name}}}' is not a column of the rows "
                          f"(they have: {have})")
    return _PLACEHOLDER.sub(fill, template)


_LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


class DatasetTask(Task):
    """A task declared in config from a `datasets` source: a hub id, a local directory or data files.

    `columns` maps the task's column names to the source's (`{"question": "problem"}`); the train and
    eval splits are named splits of the source, or a seeded held-out fraction of the train split.
    """

    def __init__(self, name: str, dataset: str, *, dataset_config: str | None = None,
                 data_files: str | list[str] | dict[str, Any] | None = None, train_split: str = "train",
                 eval_split: str | None = None, eval_fraction: float = 0.1, columns: dict[str, str] | None = None,
                 template: str | None = None, system_prompt: str | None = None,
                 few_shot: list[tuple[str, str]] | None = None, chat: bool = True,
                 rewards: dict[str, float] | None = None, seed: int = 0, description: str = ""):
        self.name = name
        self.description = description or f"dataset task from {dataset}"
        self.dataset, self.dataset_config, self.data_files = dataset, dataset_config, data_files
        self.train_split, self.eval_split, self.eval_fraction = train_split, eval_split, eval_fraction
        self.columns = columns or {}
        self.template = template  # none: the rows' own `prompt` column, or "{question}"
        self.system_prompt = system_prompt
        self.few_shot = [tuple(pair) for pair in few_shot or []]
        self.chat = chat
        self.default_rewards = rewards or {}
        self.seed = seed
        self.plugin = "config"
        self._cache: dict[str, list[dict[str, Any]]] = {}

    def _load_split(self, split_name: str) -> list[dict[str, Any]]:
        import datasets  # heavy: imported only when a dataset task is used

        path, data_files = self.dataset, self.data_files
        suffix = Path(path).suffix.lower()
        if suffix in _LOCAL_BUILDERS and Path(path).is_file():  # a single local file
            path, data_files = _LOCAL_BUILDERS[suffix], data_files or {"train": self.dataset}
        for file in _local_files(self.dataset, data_files):
            check_data_file(file)  # names the file and line, where `datasets` would not
        try:
            data = datasets.load_dataset(path, self.dataset_config, data_files=data_files, split=split_name)
        except Exception as exc:
            cause = exc.__cause__ or exc.__context__
            detail = f"{type(exc).__name__}: {exc}"
            if cause is not None and str(cause) and str(cause) not in str(exc):
                detail += f" ({type(cause).__name__}: {cause})"
            raise ConfigError(f"task '{self.name}': could not load split '{split_name}' of dataset "
                              f"'{self.dataset}': {detail}") from exc
        missing = sorted(source for source in self.columns.values() if source not in data.column_names)
        if missing:
            raise ConfigError(f"task '{self.name}': dataset '{self.dataset}' has no column "
                              f"{', '.join(map(repr, missing))}; its columns are {data.column_names}")
        renamed = {source: target for target, source in self.columns.items()}
        return [{renamed.get(k, k): v for k, v in row.items()} for row in data]

    def load(self, split: str) -> list[dict[str, Any]]:
        if split not in self._cache:
            if split == "eval" and self.eval_split:
                self._cache[split] = self._load_split(self.eval_split)
            else:
                rows = self._load_split(self.train_split)
                if self.eval_split:
                    self._cache[split] = rows
                else:
                    self._cache[split] = split_held_out(rows, split, self.eval_fraction, self.seed)
        return self._cache[split]


def _local_files(dataset: str, data_files: Any) -> list[Path]:
    """The local files a source reads: the dataset itself when it is a file, and any data_files on disk
    (relative to a dataset directory too)."""
    files = [Path(dataset)] if Path(dataset).is_file() else []
    if isinstance(data_files, (str, Path)):
        data_files = [data_files]
    elif isinstance(data_files, dict):
        data_files = [file for value in data_files.values()
                      for file in ([value] if isinstance(value, (str, Path)) else value)]
    for name in data_files or []:
        for candidate in (Path(name), Path(dataset) / str(name)):
            if candidate.is_file() and candidate not in files:
                files.append(candidate)
                break
    return files


def check_data_file(path: Path) -> None:
    """Refuse a local data file that `datasets` would refuse without saying where: an empty file, and (JSON
    lines) a line that is not a JSON object, named as `file:line`."""
    suffix = path.suffix.lower()
    if suffix not in _LOCAL_BUILDERS:
        return
    if path.stat().st_size == 0:
        raise ConfigError(f"{path}: the file is empty; it needs at least one row")
    if suffix not in (".jsonl", ".json"):
        return
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    if not text.strip():
        raise ConfigError(f"{path}: the file is empty (only white space); it needs at least one row")
    if suffix == ".json" and text.lstrip()[:1] in "[{":
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None  # JSON lines in a .json file: checked line by line below
        if isinstance(whole, list):
            if not whole:
                raise ConfigError(f"{path}: the file is an empty list; it needs at least one row")
            for index, row in enumerate(whole):
                if not isinstance(row, dict):
                    raise ConfigError(f"{path}: item {index} is a {type(row).__name__}, not a JSON object (a row)")
            return
        if isinstance(whole, dict):
            return  # one object: a row, or rows under a `field`
    if sum(1 for _ in jsonl_rows(path, text.splitlines())) == 0:  # every line is checked
        raise ConfigError(f"{path}: the file is empty; it needs at least one row")


def jsonl_rows(path: Path | str, lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of each non-blank line of a JSON-lines file; a line that is not a JSON object is an
    error naming `file:line`."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{number}: expected a JSON object (a row), got {type(row).__name__}")
        yield number, row


def split_held_out(rows: list[dict[str, Any]], split: str, eval_fraction: float, seed: int) -> list[dict[str, Any]]:
    """A seeded, disjoint train/eval partition of `rows` (at least one eval row when there are two or more);
    rows keep their order within each split."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(rows) * eval_fraction)) if len(rows) > 1 else 0
    chosen = order[:n_eval] if split == "eval" else order[n_eval:]
    return [rows[i] for i in sorted(chosen)]


def task_from_config(config, registry) -> Task:
    """The task a `TaskConfig` names: a registered one (with options and overrides) or a dataset task, with the
    environment its episodes run in (`task.environment`), if any."""
    return with_environment(_configured_task(config, registry), config, registry)


def with_environment(task: Task, config, registry) -> Task:
    """`task` with its environment ([task] environment and environment_options, else the task's
    default_environment) configured as `task.environment`. The environment's system prompt goes before the task's,
    and its few-shot turns (how to use it) replace the task's, whose examples show answers without it (unless the
    config gives few_shot)."""
    name, options = getattr(config, "environment", None) or task.default_environment, \
        getattr(config, "environment_options", None) or {}
    if name is None:
        if options:
            raise ConfigError("task.environment_options is set but no task.environment names an environment")
        return task
    environment = registry.environment(name).configured(**options)
    task = copy.copy(task)
    task.environment = environment
    if environment.system_prompt:
        task.system_prompt = "\n\n".join(part for part in (environment.system_prompt, task.system_prompt) if part)
    if environment.few_shot and getattr(config, "few_shot", None) is None:
        task.few_shot = [tuple(pair) for pair in environment.few_shot]
    return task


def _configured_task(config, registry) -> Task:
    if config.dataset:
        return DatasetTask(
            config.name, config.dataset, dataset_config=config.dataset_config, data_files=config.data_files,
            train_split=config.train_split, eval_split=config.eval_split, eval_fraction=config.eval_fraction,
            columns=config.columns, template=config.template, system_prompt=config.system_prompt,
            few_shot=config.few_shot, chat=config.chat if config.chat is not None else True,
            rewards=config.rewards,
        )
    task = registry.task(config.name).configured(**config.options)
    for attribute in ("template", "system_prompt", "few_shot", "chat"):
        value = getattr(config, attribute)
        if value is not None:
            setattr(task, attribute, value)
    if config.rewards:
        task.default_rewards = dict(config.rewards)
    return task
