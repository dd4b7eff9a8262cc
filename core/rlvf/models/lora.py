"""LoRA adapters (peft) on the model a training stage trains: `[model] lora` (rlvf.config.LoraConfig).

The adapters go into the transformers model in place (peft.inject_adapter_in_model): it stays the same
PreTrainedModel object, so the trainer's forward passes, the HF sampler and DDP use it as before, and only the
adapters (and `modules_to_save`, e.g. a reward model's score head, trained fully) require grad.

- `apply_lora(model, config, modules_to_save)`: the adapters on (B = 0: the model is unchanged at first);
- `adapters_disabled(model)`: the base model's forward while the block runs, the reference policy of RL and DPO
  (no second copy of the weights); a no-op for a model without adapters;
- `merged_weights(model)`: W + (alpha / r) B A under the base model's parameter names, what the vLLM samplers
  load and the final directory holds; a model without adapters: its state dict;
- `adapter_weights` / `load_adapter_weights`: the trainable weights, what a checkpoint holds;
- `save_trained(model, tokenizer, directory)`: the trained model as a plain HF directory (merged), its adapters in
  `directory/adapter/` (peft's layout: `PeftModel.from_pretrained(base, directory / "adapter")` loads them).

Nothing imports peft until adapters are applied: a model was given adapters only if peft is imported.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from rlvf.errors import ConfigError

if TYPE_CHECKING:
    from rlvf.config import LoraConfig

ADAPTER_DIR = "adapter"  # the adapters' subdirectory of a final model or checkpoint
ADAPTER_FILE = "adapter_model.safetensors"  # peft's names
ADAPTER_CONFIG = "adapter_config.json"
_PEFT_PREFIX = "base_model.model."  # how peft's own files name a model's weights (PeftModel.save_pretrained)


def apply_lora(model, config: LoraConfig | None, modules_to_save: list[str] | None = None):
    """Put LoRA adapters on `model` (in place; returned) and freeze the rest but `modules_to_save`; None: full
    fine-tuning, the model as it is."""
    if config is None:
        return model
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    peft_config = PeftLoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                 target_modules=config.target_modules, modules_to_save=modules_to_save, bias="none")
    peft_config.base_model_name_or_path = getattr(model, "name_or_path", None)
    try:
        inject_adapter_in_model(peft_config, model)
    except ValueError as exc:  # e.g. target modules not found
        raise ConfigError(f"model.lora.target_modules: {exc}") from None
    return model


def _adapter_layers(model) -> list[torch.nn.Module]:
    """The modules peft put into `model`: LoRA layers, and wrappers of `modules_to_save`."""
    if "peft" not in sys.modules:
        return []
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import AuxiliaryTrainingWrapper

    return [m for m in model.modules() if isinstance(m, (BaseTunerLayer, AuxiliaryTrainingWrapper))]


def has_adapters(model) -> bool:
    return bool(_adapter_layers(model))


@contextlib.contextmanager
def adapters_disabled(model):
    """`model` computes as its base model while the block runs (adapters off, the original `modules_to_save`);
    nothing changes for a model without adapters. Which parameters require grad is left as it was."""
    layers = _adapter_layers(model)
    if not layers:
        yield model
        return
    requires_grad = [(p, p.requires_grad) for layer in layers for p in layer.parameters()]
    disabled = [layer.disable_adapters for layer in layers]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield model
    finally:
        for layer, was_disabled in zip(layers, disabled, strict=True):
            layer.enable_adapters(not was_disabled)
        for parameter, flag in requires_grad:  # peft's enable_adapters sets requires_grad itself
            parameter.requires_grad_(flag)


def _merged_layer(layer) -> dict[str, torch.Tensor]:
    """The weights that replace one of peft's modules in the base model's state dict (names relative to it)."""
    from peft.utils import AuxiliaryTrainingWrapper

    if isinstance(layer, AuxiliaryTrainingWrapper):  # modules_to_save: the trained copy, unless disabled
        active = layer.original_module if layer.disable_adapters else layer.modules_to_save[layer.active_adapter]
        return dict(active.state_dict())
    base = layer.get_base_layer()
    weights = dict(base.state_dict())
    if not layer.disable_adapters and not layer.merged:
        for adapter in layer.active_adapters:
            if adapter in getattr(layer, "lora_A", {}) or adapter in getattr(layer, "lora_embedding_A", {}):
                weights["weight"] = weights["weight"] + layer.get_delta_weight(adapter)
    return weights


def merged_weights(model) -> dict[str, torch.Tensor]:
    """The model's weights with its adapters merged, under the base model's names (a tied LM head included, as
    in the state dict); the state dict itself for a model without adapters. The model is not changed."""
    state = model.state_dict()
    peft_modules = {id(layer) for layer in _adapter_layers(model)}
    if not peft_modules:
        return state
    layers = {name: module for name, module in model.named_modules() if id(module) in peft_modules}
    merged: dict[str, torch.Tensor] = {}
    done: set[str] = set()
    with torch.no_grad():
        for key, value in state.items():
            parts = key.split(".")
            owner = next((".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in layers), None)
            if owner is None:
                merged[key] = value
            elif owner not in done:  # its first key: all of the layer's merged weights, once
                done.add(owner)
                merged |= {f"{owner}.{name}": tensor for name, tensor in _merged_layer(layers[owner]).items()}
    return merged


def adapter_weights(model) -> dict[str, torch.Tensor]:
    """The adapters' weights and those of `modules_to_save` (what trains), in peft's names."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model)


def load_adapter_weights(model, weights: dict[str, torch.Tensor], where: str) -> None:
    """Adapter weights (adapter_weights' names) back into `model`; weights of other adapters are a ConfigError."""
    from peft import set_peft_model_state_dict

    expected = set(adapter_weights(model))
    if set(weights) != expected:
        raise ConfigError(f"{where}: its adapters do not fit the model's [model] lora: missing "
                          f"{sorted(expected - set(weights))[:4]}, unexpected {sorted(set(weights) - expected)[:4]}")
    set_peft_model_state_dict(model, weights)


def save_adapters(model, directory: Path) -> None:
    """The adapters as peft writes them: adapter_config.json and adapter_model.safetensors."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.peft_config["default"].save_pretrained(str(directory))
    save_file({_PEFT_PREFIX + name: tensor.detach().contiguous() for name, tensor in adapter_weights(model).items()},
              str(directory / ADAPTER_FILE))


def read_adapters(directory: Path) -> dict[str, torch.Tensor]:
    """Adapter weights written by save_adapters, in adapter_weights' names."""
    from safetensors.torch import load_file

    weights = load_file(Path(directory) / ADAPTER_FILE)
    return {name.removeprefix(_PEFT_PREFIX): tensor for name, tensor in weights.items()}


def save_trained(model, tokenizer, directory: Path, weights: dict[str, torch.Tensor] | None = None) -> None:
    """A trained model as a HF directory every command loads: with adapters, the merged weights, and the adapters
    in `directory/adapter/`. `weights`: a full state dict gathered by the caller (FSDP), saved as it is."""
    directory = Path(directory)
    if weights is None and has_adapters(model):
        weights = merged_weights(model)
        save_adapters(model, directory / ADAPTER_DIR)
    model.save_pretrained(directory, **({} if weights is None else {"state_dict": weights}))
    tokenizer.save_pretrained(directory)
