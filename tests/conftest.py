"""Shared helpers: run the real `rlvf` CLI, and put real (file-based) distributions on sys.path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Tests run offline: nothing may be fetched from a model or dataset hub (subprocesses inherit this).
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
# `make test` runs one pytest-xdist worker per core: each (and every process it starts) computes on one thread, since
# torch's default, one thread per core in every worker at once, runs several times slower than one each.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def run_rlvf(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, check: bool = True):
    """Run the installed `rlvf` command in a subprocess, as a user would."""
    result = subprocess.run([str(BIN / "rlvf"), *args], capture_output=True, text=True, timeout=240,
                            env={**os.environ, **(env or {})}, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"rlvf {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def kill_when(process: subprocess.Popen, done, seconds: float = 180) -> None:
    """SIGKILL `process` as soon as `done()` holds (e.g. a checkpoint exists); fails if it exits first."""
    import signal
    import time

    deadline = time.time() + seconds
    while time.time() < deadline and not done():
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def write_distribution(site: Path, dist_name: str, module_name: str, module_source: str,
                       entry_points: dict[str, str] | None = None, version: str = "0.1.0") -> None:
    """Write an installed distribution into `site` the way pip lays one out: the module plus a
    .dist-info folder with METADATA and entry_points.txt. Put `site` on PYTHONPATH to 'install' it."""
    (site / f"{module_name}.py").write_text(textwrap.dedent(module_source))
    info = site / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {target}" for name, target in (entry_points or {}).items())
    (info / "entry_points.txt").write_text(f"[rlvf]\n{lines}\n")


# A reward plugin for toy tasks: 1.0 when the completion contains a digit (a tiny model learns it quickly).
HAS_DIGIT_PLUGIN = """
from rlvf import hookimpl

def has_digit(prompts, completions, **columns):
    '''1.0 if the completion contains a digit.'''
    return [1.0 if any(ch.isdigit() for ch in c) else 0.0 for c in completions]

@hookimpl
def register_rewards(register):
    register(has_digit)
"""


@pytest.fixture
def site(tmp_path):
    """A directory for extra distributions and the env that puts it on the path of an `rlvf` subprocess."""
    directory = tmp_path / "site"
    directory.mkdir()
    return directory, {"PYTHONPATH": str(directory)}


def plugins_json(env=None) -> list[dict]:
    return json.loads(run_rlvf("plugins", "--json", env=env).stdout)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised Llama (2 layers, hidden 64) with the embedded model's tokenizer and chat
    template, saved as a HF directory: a real model that trains in a fraction of a second per step."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rlvf.models.names import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    directory = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


CHARACTERS = list("0123456789abcdefghijklmnopqrstuvwxyz +-=:.?")


@pytest.fixture(scope="session")
def char_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama over a 46-symbol character vocabulary: every symbol starts with a real chance of
    being sampled, so a reward on characters gives GRPO a signal from the first step and it learns in
    seconds. Saved as a HF directory with its tokenizer, like any model rlvf loads."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {token: i for i, token in enumerate(specials + CHARACTERS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|im_end|>", unk_token="<|endoftext|>")
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("char-llama")
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster started as in production, `ray start --head` (small: 2 CPUs, no dashboard, a 100 MB
    object store), with this process connected to it. `--block` keeps the head in a process of ours: ending it
    stops the cluster's processes, so nothing else on the machine is touched. Its workers can import tests/."""
    import shutil
    import signal
    import socket
    import tempfile
    import time
    import uuid

    # Token authentication with a token of this session's own, for the head and this process alike: whatever
    # Ray finds in ~/.ray (a local `ray.init()` writes a token there) does not decide it.
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex)
    import ray  # a test dependency (`make setup` installs rlvf[ray]): the Ray tests fail, not skip, without it

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp = Path(tempfile.mkdtemp(prefix="rlvf-ray-", dir="/tmp"))  # short: Ray's unix sockets live in it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "tests"),
                                                                      os.environ.get("PYTHONPATH")]))}
    log = temp / "head.log"
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=2", "--include-dashboard=false", "--object-store-memory=100000000", f"--temp-dir={temp}",
         "--disable-usage-stats"],
        env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115
    try:
        # Ready when `ray start` says so: its raylet is then registered. An open GCS port alone is not enough on a
        # loaded machine (CI saw the driver's connect fail while the raylet was still starting).
        deadline = time.time() + 120
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None, log.read_text()
            assert time.time() < deadline, "the Ray head did not start in 120 s:\n" + log.read_text()
            time.sleep(0.2)
        address = f"127.0.0.1:{port}"
        try:  # the driver attaches to this head's own node (its temp dir), not another cluster on the machine
            ray.init(address=address, logging_level="ERROR", log_to_driver=False, _temp_dir=str(temp))
        except ConnectionError as error:
            raise ConnectionError(f"{error}; the head's log:\n{log.read_text()}") from error
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)
