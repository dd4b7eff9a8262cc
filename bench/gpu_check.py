"""A GPU check for one GPU machine with no network and no model weights: does rlvf run there, and how fast.

    make gpu-check                                     # python3 bench/gpu_check.py --install
    python3 bench/gpu_check.py [--install] [--budget 450] [--trl-python PATH]
    python3 bench/gpu_check.py --device cpu --tiny     # the dry run (tests/test_gpu_check.py): well under a minute

It needs only what such a machine has: Python 3.12, torch with CUDA, transformers, peft, accelerate, pytest and
pytest-timeout (no vLLM, no `datasets`, no hub). Each part runs in its own subprocess, in this order, within
--budget seconds (a part not started in time is reported as skipped), and one table comes at the end:

1. `pytest -m gpu` on the test files with tests marked `gpu` (tests/test_gpu.py: GRPO and LoRA steps on CUDA);
2. GRPO steps through rlvf's own Trainer in bf16, full and LoRA (`[model] lora`, r = 16, alpha = 32) updates, on
   random-weight models of Qwen2.5-0.5B's and Qwen2.5-1.5B's shapes (weights do not change speed), built here from
   a config with an offline character-level tokenizer whose vocabulary has the shape's 151936 tokens;
3. the same step under torchrun with one rank over nccl, train.parallel = "ddp" and = "fsdp" (FSDP2);
4. TRL's GRPOTrainer on the 0.5B shape, full and LoRA, when `trl` imports (in this python, or --trl-python).

Columns: s/step (the median over the steps after the first), where a step's time goes (sample / train s: rlvf's
time/sampling and time/training; TRL's generation-and-scoring and the rest of its step), generated tokens/s,
peak GPU memory (torch.cuda.max_memory_allocated), and MFU of the update: FLOPs per token (6 P full, 4 P + 6 P_lora
for LoRA) x tokens / training s / --peak-tflops (790 bf16), over the completion tokens and over those plus the
prompt tokens the update runs (TRL each sequence's, rlvf each group's once), as bench/grpo_vs_trl.py counts them.

Setup from a bare checkout. rlvf finds its own algorithms and samplers, like any plugin's, through entry points
(rlvf.plugins reads importlib.metadata), so PYTHONPATH=core alone is not enough: a distribution's metadata must be
on sys.path too. So:
- an installed rlvf from this checkout (e.g. `.venv`) is used as it is;
- with --install (what `make gpu-check` passes), if setuptools >= 77 imports (the build backend of every
  pyproject.toml here; a Python 3.12 venv has none), the core, rlvf-text and rlvf-math are installed with
  `pip install --no-deps --no-build-isolation --no-index -e . -e plugins/rlvf-text -e plugins/rlvf-math`;
- otherwise (no setuptools, pip refused, e.g. an externally managed python, or --source-tree) the check runs from
  the source tree: it writes each of those distributions' metadata (METADATA and entry_points.txt, read from its
  pyproject.toml) into WORK_DIR/site/ and puts that folder and the source folders first on sys.path and on its
  subprocesses' PYTHONPATH: the very entry points an install would register, with nothing installed.
rlvf also imports pydantic and pluggy (pytest brings pluggy); an image without them needs their wheels, fetched
where there is a network (`pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64
-d build/gpu-wheels pydantic pluggy`: 3 MB, carried with the checkout) and passed as --wheels build/gpu-wheels: they
are installed into WORK_DIR/deps, which goes on the path (the image's python is left as it is). The check never
needs `datasets` (its task and reward are registered in-process; rlvf imports `datasets` only for dataset tasks).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from grpo_vs_trl import LORA, flops_per_token, parameter_counts, params_cell, rlvf_steps, trl_steps

ROOT = Path(__file__).resolve().parent.parent
# the distributions the check puts on the path: the core (algorithms, samplers) and two torch-free reward plugins
DISTRIBUTIONS = {".": "core", "plugins/rlvf-text": "plugins/rlvf-text", "plugins/rlvf-math": "plugins/rlvf-math"}
REQUIRED = ("torch", "transformers", "peft", "accelerate", "tokenizers", "safetensors", "pydantic", "pluggy", "tqdm")
# Qwen2.5's published shapes (tied embeddings); --tiny: stand-ins of a few thousand parameters under the same names
SHAPES = {
    "0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2, "vocab_size": 151936},
    "1.5b": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
             "num_key_value_heads": 2, "vocab_size": 151936},
}
TINY_SHAPES = {
    "0.5b": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 128},
    "1.5b": {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 128},
}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # unk, bos, eos = pad
CHARACTERS = list("0123456789abcdefghijklmnopqrstuvwxyz +-=:.?")
TASK, REWARD = "gpu-check", "digit_fraction"
PART_TIMEOUT = 240.0  # seconds: a part that hangs (a collective waiting forever) leaves the rest of the budget


@dataclass(frozen=True)
class Workload:
    prompts: int  # per step
    group: int  # G completions per prompt
    max_new_tokens: int
    prompt_chars: int  # a prompt's length in tokens (the tokenizer is character-level)
    steps: int  # the first is warm-up


FULL_WORKLOAD = Workload(prompts=8, group=8, max_new_tokens=128, prompt_chars=128, steps=4)
TINY_WORKLOAD = Workload(prompts=2, group=2, max_new_tokens=4, prompt_chars=12, steps=2)


@dataclass(frozen=True)
class Part:
    """A subprocess of the check and the table rows it reports."""

    name: str  # what --part runs
    rows: tuple[str, ...]
    torchrun: bool = False
    trl: bool = False


PARTS = (
    Part("tests", ("pytest -m gpu",)),
    Part("rlvf@0.5b", ("rlvf full @0.5b", "rlvf lora @0.5b")),
    Part("ddp@0.5b", ("rlvf ddp (1 rank) @0.5b",), torchrun=True),
    Part("fsdp@0.5b", ("rlvf fsdp (1 rank) @0.5b",), torchrun=True),
    Part("rlvf@1.5b", ("rlvf full @1.5b", "rlvf lora @1.5b")),
    Part("trl@0.5b", ("trl full @0.5b", "trl lora @0.5b"), trl=True),
)


# --- the task, reward and model the runs train (in every subprocess) ---

def digit_fraction(prompts, completions, **columns):
    """Fraction of the completion's characters that are digits (random weights give it some variance)."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def check_rows(split: str, count: int, prompt_chars: int) -> list[dict]:
    import random

    rng = random.Random(f"{split}-{count}-{prompt_chars}")
    return [{"question": "".join(rng.choice(CHARACTERS) for _ in range(prompt_chars)), "index": i}
            for i in range(count)]


def check_registry(workload: Workload):
    """The installed plugins' registry plus the check's own task (text prompts of random characters) and reward."""
    from rlvf import hookimpl
    from rlvf.api.tasks import Task
    from rlvf.plugins import PluginInfo, load_registry

    class CheckTask(Task):
        name = TASK
        template = "{question}"
        chat = False
        default_rewards = {REWARD: 1.0}

        def load(self, split):
            return check_rows(split, workload.prompts * workload.steps, workload.prompt_chars)

    class CheckPlugin:
        @hookimpl
        def register_tasks(self, register):
            register(CheckTask())

        @hookimpl
        def register_rewards(self, register):
            register(digit_fraction)

    registry = load_registry()
    registry.add_plugin(CheckPlugin(), PluginInfo(TASK, "gpu-check", "0", f"{TASK} = bench/gpu_check.py"))
    return registry


def offline_tokenizer(vocab_size: int):
    """A character-level tokenizer with exactly `vocab_size` tokens (specials, characters, then fillers), built
    without the hub: sampled ids of any size decode."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = SPECIAL_TOKENS + CHARACTERS
    tokens += [f"<t{i}>" for i in range(vocab_size - len(tokens))]
    backend = Tokenizer(models.WordLevel({token: i for i, token in enumerate(tokens)}, unk_token=SPECIAL_TOKENS[0]))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=SPECIAL_TOKENS[0],
                                   bos_token=SPECIAL_TOKENS[1], eos_token=SPECIAL_TOKENS[2],
                                   pad_token=SPECIAL_TOKENS[2])


def ensure_model(work_dir: Path, shape: str, tiny: bool, device: str) -> Path:
    """A random-weight Qwen2 of `shape` with its tokenizer, saved once under WORK_DIR/models (built on `device`:
    a 1.5B model initialises in a second on a GPU)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    directory = work_dir / "models" / (shape + ("-tiny" if tiny else ""))
    if (directory / "config.json").is_file():
        return directory
    dims = (TINY_SHAPES if tiny else SHAPES)[shape]
    config = Qwen2Config(**dims, max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=1,
                         eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    offline_tokenizer(dims["vocab_size"]).save_pretrained(staging)
    staging.rename(directory)
    return directory


# --- the parts, in their subprocesses ---

def peak_memory_reset(device: str) -> None:
    """Peak memory from here on: what the previous run of the process held is gone first."""
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gb(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else None


def rlvf_run(args, workload: Workload, shape: str, lora: bool = False, parallel: str = "none") -> dict:
    from rlvf.config import load_config
    from rlvf.stages.rl import Trainer

    model_dir = ensure_model(args.work_dir, shape, args.tiny, args.device)
    batch = workload.prompts * workload.group
    output_dir = args.work_dir / "runs" / f"{parallel}-{'lora' if lora else 'full'}-{shape}"
    shutil.rmtree(output_dir, ignore_errors=True)
    overrides = {
        "model.name": str(model_dir), "model.dtype": "bfloat16" if args.device == "cuda" else "float32",
        "task.name": TASK, f"reward.mix.{REWARD}": 1.0, "sampling.sampler": "hf",
        "sampling.max_new_tokens": workload.max_new_tokens, "sampling.batch_size": batch, "seed": 0,
        "train.steps": workload.steps, "train.prompts_per_step": workload.prompts, "train.group_size": workload.group,
        "train.micro_batch_size": batch, "train.lr": 1e-6, "train.save_every": 0, "train.eval_before": False,
        "train.report_to": ["jsonl"], "train.progress": False, "train.output_dir": str(output_dir),
        "train.parallel": parallel, "algorithm.beta": 0.0, "algorithm.loss_aggregation": "token_mean",
        "eval.limit": 1, **({"model.lora": LORA} if lora else {}),
    }
    config = load_config(None, [f"{key}={json.dumps(value)}" for key, value in overrides.items()])
    peak_memory_reset(args.device)
    trainer = Trainer(config, check_registry(workload))
    try:
        if parallel != "none" and not trainer.dist.enabled:
            raise RuntimeError(f"train.parallel = {parallel!r} under torchrun made no process group")
        steps = rlvf_steps(trainer, workload.steps)
        return {"steps": steps, **parameter_counts(trainer.model), "peak_gpu_gb": peak_memory_gb(args.device),
                "note": trainer.dist.describe()}
    finally:
        trainer.dist.close()


def trl_run(args, workload: Workload, shape: str, lora: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = ensure_model(args.work_dir, shape, args.tiny, args.device)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    peak_memory_reset(args.device)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    rows = [{"prompt": row["question"]} for row in
            check_rows("train", workload.prompts * workload.steps, workload.prompt_chars)]
    output_dir = args.work_dir / "runs" / f"trl-{'lora' if lora else 'full'}-{shape}"
    steps, counts = trl_steps(model, tokenizer, rows, [digit_fraction], [1.0], steps=workload.steps,
                              prompts=workload.prompts, group=workload.group, max_new_tokens=workload.max_new_tokens,
                              output_dir=str(output_dir), lora=lora, cpu=args.device == "cpu")
    import trl

    return {"steps": steps, **counts, "peak_gpu_gb": peak_memory_gb(args.device), "note": f"trl {trl.__version__}"}


def environment(device: str) -> dict:
    import torch

    versions = {name: _version(name) for name in ("torch", "transformers", "peft")}
    where = importlib.metadata.distribution("rlvf")
    return {"python": sys.version.split()[0], **versions,
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "rlvf_metadata": str(getattr(where, "_path", "?"))}


def run_part(args) -> None:
    """One part (--part), in its own process: one RESULT line per row, as each finishes (a later crash keeps them)."""
    workload = TINY_WORKLOAD if args.tiny else FULL_WORKLOAD
    part = next(p for p in PARTS if p.name == args.part)
    kind, shape = part.name.split("@")
    if int(os.environ.get("RANK", "0")) == 0:
        print("ENV " + json.dumps(environment(args.device)), flush=True)
    for row in part.rows:
        lora = " lora " in row
        try:
            if kind == "trl":
                result = trl_run(args, workload, shape, lora)
            else:
                result = rlvf_run(args, workload, shape, lora=lora,
                                  parallel=kind if kind in ("ddp", "fsdp") else "none")
            result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
        except Exception as exc:  # the part's other rows still run (after an out-of-memory error, say)
            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
        if int(os.environ.get("RANK", "0")) == 0:
            print("RESULT " + json.dumps({"row": row, **result}), flush=True)


# --- the parent: setup, the parts, the table ---

def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def rlvf_installed_here() -> bool:
    """An installed `rlvf` distribution whose package is this checkout's."""
    spec = importlib.util.find_spec("rlvf")
    return (_version("rlvf") is not None and spec is not None and spec.origin is not None
            and Path(spec.origin).resolve().is_relative_to(ROOT / "core"))


def setuptools_usable() -> bool:
    """setuptools >= 77 imports in this python: the pyproject.toml files' build backend (they ask for >= 68, but their
    `license = "Apache-2.0"` needs 77)."""
    probe = "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 77)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def pip_install_editable() -> bool:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--no-build-isolation", "--no-index"]
    for directory in DISTRIBUTIONS:
        command += ["-e", str(ROOT / directory)]
    print("installing:", " ".join(command[2:]), file=sys.stderr)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        print(f"pip refused ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}): "
              "running from the source tree instead", file=sys.stderr)
    return done.returncode == 0


def source_tree_paths(site: Path) -> list[str]:
    """Each distribution's metadata (name, version, entry points from its pyproject.toml) written into `site`, as
    pip lays out an installed one; the paths that make them importable: `site` and their source folders."""
    import tomllib

    shutil.rmtree(site, ignore_errors=True)
    paths = [str(site)]
    for directory, source in DISTRIBUTIONS.items():
        project = tomllib.loads((ROOT / directory / "pyproject.toml").read_text())["project"]
        name, version = project["name"], project["version"]
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        groups = {**{group: points for group, points in project.get("entry-points", {}).items()},
                  "console_scripts": project.get("scripts", {})}
        (info / "entry_points.txt").write_text("".join(
            f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in points.items()) + "\n"
            for group, points in groups.items() if points))
        paths.append(str(ROOT / source))
    return paths


def setup_rlvf(args) -> dict[str, str]:
    """Make rlvf (its requirements and entry points too) importable here and in the subprocesses; the environment
    they need."""
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # torch sees no GPU: rlvf picks the CPU, float32 and gloo
    paths = [*requirement_paths(args), *filter(None, [os.environ.get("PYTHONPATH")])]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    if not args.source_tree and rlvf_installed_here():
        return env
    if args.install and not args.source_tree and setuptools_usable() and pip_install_editable():
        os.execv(sys.executable, [sys.executable, *sys.argv])  # the new install's .pth files load at start
    if args.install and not args.source_tree and not setuptools_usable():
        print("setuptools >= 77 is not importable (pip install setuptools where there is a network, or bring its "
              "wheel): running from the source tree instead", file=sys.stderr)
    source = source_tree_paths(args.work_dir / "site")
    sys.path[:0] = source
    importlib.invalidate_caches()
    env["PYTHONPATH"] = os.pathsep.join([*source, *paths])
    return env


def requirement_paths(args) -> list[str]:
    """rlvf's requirements (REQUIRED) importable: as the image has them, or installed from --wheels into
    WORK_DIR/deps, a folder put on the path (the image stays as it is, an externally managed python too); the paths
    to add."""
    target = args.work_dir / "deps"
    paths = [str(target)] if target.is_dir() else []
    sys.path[:0] = paths

    def missing() -> list[str]:
        importlib.invalidate_caches()
        return [name for name in REQUIRED if importlib.util.find_spec(name) is None]

    if missing() and args.wheels is not None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index",
                        "--find-links", str(args.wheels), "--target", str(target), *missing()], check=False)
        if not paths:
            paths = [str(target)]
            sys.path.insert(0, paths[0])
    if missing():
        sys.exit(f"missing: {', '.join(missing())}. Bring their wheels (see this script's docstring) and pass --wheels")
    return paths


def gpu_test_files() -> list[str]:
    marked = re.compile(r"pytest\.mark\.gpu\b")
    return sorted(str(path) for path in (ROOT / "tests").glob("test_*.py") if marked.search(path.read_text()))


def part_command(part: Part, args, python: str) -> list[str]:
    if part.name == "tests":
        return [python, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *gpu_test_files()]
    options = ["--part", part.name, "--device", args.device, "--work-dir", str(args.work_dir),
               *(["--tiny"] if args.tiny else [])]
    if part.torchrun:
        # --standalone: torchrun binds a free port itself (a port picked here could be taken before it binds)
        return [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", __file__, *options]
    return [python, __file__, *options]


def trl_importable(python: str) -> bool:
    return subprocess.run([python, "-c", "import trl"], capture_output=True).returncode == 0


def descendants(pid: int) -> list[int]:
    """The processes `pid` started, and theirs (from /proc): torchrun starts its workers in sessions of their own."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def run_bounded(command: list[str], timeout: float, env: dict[str, str]) -> tuple[str, str | None]:
    """(stdout, None) of a command that succeeded; (stdout so far, why) of one that failed or ran out of time. On
    time-out it is killed with every process it started (torchrun's workers would hold the GPU and the pipes)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                               start_new_session=True)
    try:
        output, errors = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [*descendants(process.pid), process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a process it started escaped and keeps the pipes open
            output = ""
        return output, f"timed out after {timeout:.0f} s"
    return output, (errors.strip() or output.strip() or f"exit status {process.returncode}") if process.returncode \
        else None


def run_parts(args, env: dict[str, str]) -> tuple[dict[str, dict], dict]:
    """Every part within the budget: its rows' results (or why there are none), and the environment reported."""
    deadline = time.monotonic() + args.budget
    results: dict[str, dict] = {}
    reported_env: dict = {}
    for part in PARTS:
        python = (args.trl_python or sys.executable) if part.trl else sys.executable
        left = deadline - time.monotonic()
        if part.trl and not trl_importable(python):
            results |= {row: {"status": f"skipped: trl does not import in {python}"} for row in part.rows}
            continue
        if left < 20:
            results |= {row: {"status": "skipped: out of time (--budget)"} for row in part.rows}
            continue
        print(f"[{args.budget - left:5.0f} s] {part.name} ...", file=sys.stderr, flush=True)
        output, failure = run_bounded(part_command(part, args, python), min(left, PART_TIMEOUT), {**os.environ, **env})
        if part.name == "tests":
            summary = (output.strip().splitlines() or ["no output"])[-1]
            results[part.rows[0]] = {"status": ("failed: " if failure else "") + summary}
            if failure:
                print(output[-4000:], file=sys.stderr)
            continue
        for line in output.splitlines():
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
                error = result.pop("error", None)
                if error:
                    print(f"--- {result['row']} failed:\n{result.pop('traceback')}", file=sys.stderr)
                results[result.pop("row")] = {**result, "status": f"failed: {error[-160:]}" if error else "ok"}
            elif line.startswith("ENV ") and not reported_env:
                reported_env = json.loads(line[len("ENV "):])
        for row in part.rows:
            if row not in results:
                last = str(failure or "no result").strip().splitlines()[-1]
                results[row] = {"status": f"failed: {last[-160:]}"}
                print(f"--- {part.name} failed:\n{str(failure)[-4000:]}", file=sys.stderr)
    return results, reported_env


def table(results: dict[str, dict], peak_tflops: float) -> tuple[list[str], list[list[str]]]:
    headers = ["run", "params M (trained)", "s/step", "sample / train s", "gen tok/s", "peak GPU GB",
               "MFU compl. / +prompt", "status"]
    rows = []
    for part in PARTS:
        for name in part.rows:
            result = results[name]
            if "steps" not in result:
                rows.append([name, *["-"] * 6, result["status"]])
                continue
            measured = result["steps"][1:] or result["steps"]  # the first step is warm-up
            seconds = statistics.median(s["seconds"] for s in measured)
            parts = " / ".join(f"{statistics.median(s[k] for s in measured):.2f}" for k in ("sampling", "training"))
            tokens = sum(s.get("tokens", 0) for s in measured)
            training = sum(s["training"] for s in measured)
            completion = flops_per_token(result) * tokens / training / (peak_tflops * 1e12)
            prompt = flops_per_token(result) * sum(s.get("prompt_tokens", 0) for s in measured) / training / (
                peak_tflops * 1e12)
            memory = "-" if result.get("peak_gpu_gb") is None else f"{result['peak_gpu_gb']:.1f}"
            rows.append([name, params_cell(result), f"{seconds:.2f}", parts,
                         f"{tokens / sum(s['seconds'] for s in measured):.0f}", memory,
                         f"{completion:.1%} / {completion + prompt:.1%}", f"ok ({result['note']})"])
    return headers, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and a few tokens (the dry run)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole check")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="the MFU's 100%% (H200 bf16: 790)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/rlvf-gpu-check"),
                        help="models, runs and (from the source tree) the distributions' metadata")
    parser.add_argument("--install", action="store_true",
                        help="pip install the repo's distributions (--no-deps --no-build-isolation) if setuptools is "
                             "there; else, and without it, run from the source tree")
    parser.add_argument("--source-tree", action="store_true", help="run from the source tree even if installed")
    parser.add_argument("--wheels", type=Path, help="a folder of wheels for missing requirements (pydantic, pluggy)")
    parser.add_argument("--trl-python", help="a python with trl for the TRL rows (default: this one)")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # internal: one part, in its subprocess
    args = parser.parse_args()
    args.work_dir = args.work_dir.resolve()
    if args.part:
        run_part(args)
        return
    env = setup_rlvf(args)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run the dry run instead, --device cpu --tiny")
    start = time.monotonic()
    results, reported = run_parts(args, env)
    workload = TINY_WORKLOAD if args.tiny else FULL_WORKLOAD
    from rlvf.tools.table import format_table

    shapes = TINY_SHAPES if args.tiny else SHAPES
    print(", ".join(f"{key} {value}" for key, value in reported.items()))
    print(f"GRPO, {workload.prompts} prompts x G={workload.group}, {workload.prompt_chars}-token prompts, "
          f"{workload.max_new_tokens} new tokens, {workload.steps} steps (first is warm-up), "
          f"{'bf16' if args.device == 'cuda' else 'float32'}, random-weight Qwen2 shapes: "
          + "; ".join(f"{name} = {dims['num_hidden_layers']} x {dims['hidden_size']}, vocab {dims['vocab_size']}"
                      for name, dims in shapes.items())
          + f"; LoRA r={LORA['r']} alpha={LORA['alpha']}; MFU against {args.peak_tflops:.0f} TFLOP/s")
    print(format_table(*table(results, args.peak_tflops)))
    print(f"workload {json.dumps(asdict(workload))}; the check took {time.monotonic() - start:.0f} s")
    if any(r["status"].startswith("failed") for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
