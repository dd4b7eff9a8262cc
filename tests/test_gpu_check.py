"""bench/gpu_check.py's dry run (--device cpu --tiny: tiny shapes, a few tokens, float32, gloo) runs every part of
the GPU check and prints every row of its table, so the check cannot rot between GPU machines. It runs from the
source tree (--source-tree: the distributions' metadata written next to the sources, nothing installed), the route
a bare GPU image without setuptools takes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from conftest import REPO

ROWS = ("pytest -m gpu", "rlvf full @0.5b", "rlvf lora @0.5b", "rlvf ddp (1 rank) @0.5b", "rlvf fsdp (1 rank) @0.5b",
        "rlvf full @1.5b", "rlvf lora @1.5b", "trl full @0.5b", "trl lora @0.5b")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_dry_run_from_the_source_tree_prints_every_row(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--device", "cpu", "--tiny",
                           "--source-tree", "--work-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=290, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    lines = done.stdout.splitlines()
    # the entry points came from the metadata the check wrote, not from an installed rlvf
    assert f"rlvf_metadata {tmp_path / 'site'}" in lines[0], lines[0]
    cells = {}
    for row in ROWS:
        found = [line for line in lines if line.startswith(row + "  ")]
        assert len(found) == 1, f"row {row!r} missing from:\n{done.stdout}"
        cells[row] = found[0].split("  ")[-1].strip()  # the status column
    assert "skipped" in cells["pytest -m gpu"] and "failed" not in cells["pytest -m gpu"]  # no CUDA here
    for row in ROWS[1:7]:
        assert cells[row].startswith("ok"), (row, cells[row])
    assert "ddp on 1 ranks (gloo)" in cells["rlvf ddp (1 rank) @0.5b"]
    assert "fsdp on 1 ranks (gloo)" in cells["rlvf fsdp (1 rank) @0.5b"]
    trl = importlib.util.find_spec("trl") is not None
    for row in ROWS[7:]:
        assert cells[row].startswith("ok" if trl else "skipped: trl does not import"), (row, cells[row])
