"""Attention for the CPU: transformers' "sdpa" attention copies grouped K/V heads to every query head under a padding
mask; `grouped_attention` hands them to SDPA as they are (`enable_gqa`, the same numbers), for the HF sampler's decode
steps and the trainer's forward pass alike."""

from __future__ import annotations

import contextlib
import functools

GROUPED_SDPA = "rlvf_grouped_sdpa"  # the attention implementation registered with transformers inside the block


@contextlib.contextmanager
def grouped_attention(model):
    """On a CPU, switch a model that uses transformers' "sdpa" attention to `_grouped_sdpa` inside the block."""
    config = model.config
    if model.device.type != "cpu" or getattr(config, "_attn_implementation", None) != "sdpa":
        yield
        return
    _register_grouped_sdpa()
    config._attn_implementation = GROUPED_SDPA
    try:
        yield
    finally:
        config._attn_implementation = "sdpa"


@functools.cache
def _register_grouped_sdpa() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(GROUPED_SDPA, _grouped_sdpa)
    AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)


def _grouped_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers' "sdpa" attention, except that under a padding mask grouped K/V heads go to SDPA as they are
    (`enable_gqa`, the same numbers): transformers copies them to every query head there, a third of a CPU decode
    step for SmolLM2 (3 K/V heads for 9 query heads)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is None or key.shape[1] == query.shape[1] or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                           dropout_p=dropout, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None
