"""The critic of PPO: a value head, Linear(hidden, 1), on a decoder's hidden states.

V_t, the value of the state before completion token t, reads the same hidden state the policy uses to
predict token t, so the trainer's prefix-sharing forward (trainer.completion_hidden_states) serves both.

- `init = "policy"` (default): its own decoder, a copy of the policy's weights; the value head starts at 0.
- `init = PATH`: the decoder of a causal LM or of a reward model (a sequence-classification checkpoint, whose
  one-label score head then initialises the value head). It must use the policy's tokenizer.
- `share_policy_backbone = true`: no decoder of its own; the head reads the policy's hidden states and its loss
  is added to the policy's (times vf_coef). Saves a whole model, its gradients and its Adam state.
"""

from __future__ import annotations

import copy

import torch

from rlvf.config import CriticConfig
from rlvf.errors import ConfigError


class Critic(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module | None, hidden_size: int, dtype: torch.dtype):
        super().__init__()
        self.backbone = backbone  # None: the policy's decoder (share_policy_backbone)
        self.head = torch.nn.Linear(hidden_size, 1, dtype=dtype)
        torch.nn.init.zeros_(self.head.weight)  # V = 0 at first: no random values enter the first advantages
        torch.nn.init.zeros_(self.head.bias)

    @property
    def shares_policy(self) -> bool:
        return self.backbone is None

    def decoder(self, policy_model) -> torch.nn.Module:
        """The decoder whose hidden states the head reads."""
        return policy_model.get_decoder() if self.backbone is None else self.backbone

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states [..., H] -> values [...] (float32)."""
        return self.head(hidden).squeeze(-1).float()


def build_critic(config: CriticConfig, policy_model, vocab_size: int) -> Critic:
    """The critic on the policy's device and dtype; see the module docstring for the `init` choices."""
    dtype = next(policy_model.parameters()).dtype
    device = next(policy_model.parameters()).device
    hidden_size = policy_model.config.hidden_size
    if config.share_policy_backbone:
        return Critic(None, hidden_size, dtype).to(device)
    if config.init == "policy":
        critic = Critic(copy.deepcopy(policy_model.get_decoder()), hidden_size, dtype)
        return critic.to(device)
    backbone, score = _load_backbone(config.init, dtype)
    if backbone.get_input_embeddings().num_embeddings < vocab_size:
        raise ConfigError(f"critic.init '{config.init}' has {backbone.get_input_embeddings().num_embeddings} "
                          f"token embeddings, fewer than the policy's tokenizer ({vocab_size}): it must share it")
    critic = Critic(backbone, backbone.config.hidden_size, dtype)
    if score is not None and tuple(score.weight.shape) == (1, backbone.config.hidden_size):
        with torch.no_grad():
            critic.head.weight.copy_(score.weight)
            if getattr(score, "bias", None) is not None:
                critic.head.bias.copy_(score.bias)
    return critic.to(device)


def _load_backbone(name: str, dtype: torch.dtype):
    """(decoder, score head or None) of a causal LM or sequence-classification checkpoint."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    from rlvf.models.names import resolve_model

    try:
        path = resolve_model(name, key="critic.init")
        architectures = AutoConfig.from_pretrained(path).architectures or []
        if any(a.endswith("ForSequenceClassification") for a in architectures):
            model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype)
            return model.base_model, getattr(model, "score", None)
        return AutoModel.from_pretrained(path, dtype=dtype), None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"could not load critic.init '{name}': {exc}") from None
