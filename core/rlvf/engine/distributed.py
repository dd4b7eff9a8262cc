"""Training on several processes started by torchrun: PyTorch's DDP or FSDP2 on the policy.

    torchrun --nproc_per_node 2 --no-python rlvf train run.toml train.parallel=ddp     # or fsdp

Each rank reads RANK / WORLD_SIZE / LOCAL_RANK from torchrun, joins the process group (nccl on CUDA, one GPU per
rank; gloo on CPU), samples and scores its share of the step's prompts, and takes part in one optimiser step over
the whole step's batch:

- "ddp": `DistributedDataParallel` replicates the policy and averages gradients over the ranks;
- "fsdp": FSDP2 (`torch.distributed.fsdp.fully_shard`, each decoder layer a unit, the rest in the root) shards the
  weights, gradients and AdamW moments over the ranks; the weights are gathered for sampling and evaluation.

What makes a step equal to a single-process step on the same global batch (tests/test_distributed.py): the
advantage estimators see the whole batch (every rank gathers their inputs and keeps its rows: batch-normalised
ones, like reinforce_pp or grpo with normalize = "batch", need it), the loss normalisers (sequences, tokens) are
global totals, and each rank's loss is scaled by the world size because DDP and FSDP average gradients. The
checkpoints hold full (unsharded) weights and optimizer state written by rank 0, so a run resumes on any number
of ranks. Without torchrun (WORLD_SIZE unset), or on one rank with train.parallel = "none", nothing here does
anything: a single process.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass, field
from typing import Any, get_args

import torch

from rlvf.config import ParallelMode
from rlvf.errors import ConfigError

PARALLEL = get_args(ParallelMode)


@dataclass
class Distributed:
    """This process's place in the run and the collective operations the trainer needs (no-ops on one rank)."""

    parallel: str = "none"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # where tensors go for collectives (the rank's GPU under nccl)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # a process group even of one rank (torchrun --nproc_per_node 1 with train.parallel set): the DDP / FSDP code
    # runs as it would on many ranks (bench/gpu_check.py checks nccl so on one GPU)
    grouped: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.grouped

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def fsdp(self) -> bool:
        return self.enabled and self.parallel == "fsdp"

    def describe(self) -> str:
        if not self.enabled:
            return "one process"
        import torch.distributed as dist

        return f"{self.parallel} on {self.world_size} ranks ({dist.get_backend()})"

    # --- collectives ---

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's `value` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def sum(self, value: float) -> float:
        return self._reduce(value, "sum")

    def max(self, value: float) -> float:
        return self._reduce(value, "max")

    def _reduce(self, value: float, op: str) -> float:
        if not self.enabled:
            return value
        import torch.distributed as dist

        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        result = float(tensor.item())
        return int(result) if isinstance(value, int) else result

    def gather_rows(self, tensor: torch.Tensor | None) -> torch.Tensor | None:
        """Every rank's rows of `tensor` concatenated in rank order; a second dimension (tokens) is zero-padded to
        the longest. Every rank must hold as many rows (each takes the same share of the step's prompts)."""
        if tensor is None or not self.enabled:
            return tensor
        import torch.distributed as dist

        local = tensor.to(self.device)
        if local.dim() > 1:
            width = int(self.max(local.shape[1]))
            local = torch.nn.functional.pad(local, (0, width - local.shape[1]))
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts).to(tensor.device)

    def own_rows(self, tensor: torch.Tensor | None, rows: int, width: int | None = None) -> torch.Tensor | None:
        """This rank's `rows` rows of a gathered tensor (and its first `width` columns)."""
        if tensor is None or not self.enabled:
            return tensor
        mine = tensor[self.rank * rows: (self.rank + 1) * rows]
        return mine[:, :width] if width is not None and mine.dim() > 1 else mine

    # --- the model ---

    def wrap(self, module: torch.nn.Module, shard_layers: list[torch.nn.Module] | None = None) -> torch.nn.Module:
        """`module` under DDP, or sharded in place with FSDP2 (`shard_layers` become units of their own); as it
        is on one rank. Build the optimizer after this: FSDP2 replaces the parameters with sharded ones."""
        if not self.enabled:
            return module
        if self.parallel == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            # broadcast_buffers=False: the buffers (rotary frequencies) are constants, equal on every rank
            return DistributedDataParallel(module, broadcast_buffers=False)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self.device.type, (self.world_size,))
        for layer in shard_layers or []:
            fully_shard(layer, mesh=mesh)
        root = fully_shard(module, mesh=mesh)
        # FSDP2 takes the first module to run forward as the root; the sampler calls the layers first (outside the
        # root's forward), so settle now that the root is `module`.
        root._get_fsdp_state()._lazy_init()
        return root

    @contextlib.contextmanager
    def full_weights(self, module: torch.nn.Module):
        """FSDP: the full weights in place of the shards while the block runs (sampling, evaluation, forward passes
        outside the training module), with no collective inside it, so ranks may run different numbers of forward
        passes. Every rank must enter it. Elsewhere: nothing to do."""
        if not self.fsdp:
            yield
            return
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in module.modules() if isinstance(m, FSDPModule)]
        for unit in units:
            unit.set_reshard_after_forward(False, recurse=False)
            unit.unshard()
        try:
            yield
        finally:
            for unit in units:
                unit.reshard()
                unit.set_reshard_after_forward(True, recurse=False)

    def accumulating(self, modules: list[torch.nn.Module], sync: bool):
        """Gradient accumulation: gradients are reduced over the ranks only when `sync` (the last micro-batch)."""
        stack = contextlib.ExitStack()
        if not self.enabled:
            return stack
        for module in modules:
            if self.parallel == "ddp" and not sync:
                stack.enter_context(module.no_sync())
            elif self.parallel == "fsdp":
                module.set_requires_gradient_sync(sync)
        return stack

    def full_state(self, module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor] | None:
        """FSDP: the full weights of `module` (keys without `prefix`) on rank 0, None on the others; every rank
        must call it. Elsewhere: None (the model's own state dict is full)."""
        if not self.fsdp:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {key.removeprefix(prefix): value for key, value in state.items()} if self.is_main else None

    def load_full_state(self, module: torch.nn.Module, state: dict[str, torch.Tensor], prefix: str = "") -> None:
        """FSDP: load full weights (read by every rank) into the shards."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, {prefix + key: value for key, value in state.items()},
                             options=StateDictOptions(full_state_dict=True, strict=False))

    def full_optimizer_state(self, module: torch.nn.Module, optimizer, names: list[str], prefix: str = ""):
        """FSDP: the full optimizer state on rank 0 in torch's own layout (parameters by index, in the order of
        `names`), so that a single process loads it with `optimizer.load_state_dict`; None on the other ranks."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        state = get_optimizer_state_dict(module, optimizer,
                                         options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.is_main:
            return None
        index = {name: i for i, name in enumerate(names)}
        return {"state": {index[key.removeprefix(prefix)]: value for key, value in state["state"].items()},
                "param_groups": [{**group, "params": [index[p.removeprefix(prefix)] for p in group["params"]]}
                                 for group in state["param_groups"]]}

    def load_full_optimizer_state(self, module: torch.nn.Module, optimizer, state, names: list[str],
                                  prefix: str = "") -> None:
        """FSDP: load an optimizer state in torch's own layout (see full_optimizer_state) into the shards."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        by_name = {"state": {prefix + names[i]: value for i, value in state["state"].items()},
                   "param_groups": [{**group, "params": [prefix + names[i] for i in group["params"]]}
                                    for group in state["param_groups"]]}
        set_optimizer_state_dict(module, optimizer, optim_state_dict=by_name,
                                 options=StateDictOptions(full_state_dict=True))

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def init_distributed(parallel: str = "none") -> Distributed:
    """The process group torchrun's environment asks for (gloo on CPU, nccl with one GPU per rank), also of one rank
    when train.parallel is set; a single process when WORLD_SIZE is unset, or 1 with train.parallel = 'none'."""
    if parallel not in PARALLEL:
        raise ConfigError(f"train.parallel must be one of {', '.join(PARALLEL)}, got {parallel!r}")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and (parallel == "none" or "WORLD_SIZE" not in os.environ):
        return Distributed(parallel=parallel)
    if parallel == "none":
        raise ConfigError(f"started by torchrun with {world_size} processes, but train.parallel = 'none': set it to "
                          "'ddp' (a replica per rank) or 'fsdp' (sharded)")
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cpu")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not dist.is_initialized():  # a long timeout: the other ranks wait while rank 0 evaluates or saves
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=2))
    return Distributed(parallel=parallel, rank=rank, world_size=world_size, local_rank=local_rank, device=device,
                       grouped=True)
