"""The critic of PPO: a value head, Linear(hidden, 1), on a decoder's hidden states, and the value model the RL
loop trains (ValueModel: the critic with its optimizer, schedule, loss and forward pass).

V_t, the value of the state before completion token t, reads the same hidden state the policy uses to
predict token t, so the trainer's prefix-sharing forward (rlvf.models.forward.completion_hidden_states) serves both.

- `init = "policy"` (default): its own decoder, a copy of the policy's weights; the value head starts at 0.
- `init = PATH`: the decoder of a causal LM or of a reward model (a sequence-classification checkpoint, whose
  one-label score head then initialises the value head). It must use the policy's tokenizer.
- `share_policy_backbone = true`: no decoder of its own; the head reads the policy's hidden states and its loss
  is added to the policy's (times vf_coef). Saves a whole model, its gradients and its Adam state.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from rlvf.config import CriticConfig
from rlvf.errors import ConfigError
from rlvf.models.forward import ValueForward, completion_values


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


class ValueModel:
    """The critic as the RL loop trains it: `values` when a rollout is made (V_old), `loss` on a micro-batch,
    `step` after each mini-batch, and its part of a checkpoint (`module`'s weights, `state_dict`'s states).

    `value_loss` is a VALUE_LOSSES entry and `aggregate` the policy's LOSS_AGGREGATIONS entry; `optimizer` and
    `scheduler` are over `module`'s parameters. A critic with a decoder of its own runs forward as a module of
    `dist` (DDP under torchrun); one sharing the policy's backbone gets its values from the policy's forward."""

    def __init__(self, module: Critic, policy_model, *, optimizer, scheduler, value_loss: Callable,
                 aggregate: Callable, clip: float, max_grad_norm: float, dist):
        self.module = module
        self.policy_model = policy_model
        self.optimizer, self.scheduler = optimizer, scheduler
        self.value_loss, self.aggregate, self.clip, self.max_grad_norm = value_loss, aggregate, clip, max_grad_norm
        # the module whose backward reduces the critic's gradients over the ranks; None: the policy's does
        self.value_forward = None if module.shares_policy else dist.wrap(ValueForward(module))

    @property
    def shares_policy(self) -> bool:
        return self.module.shares_policy

    @property
    def backbone(self) -> torch.nn.Module | None:
        """The critic's own decoder; None: it reads the policy's."""
        return self.module.backbone

    @property
    def head(self) -> torch.nn.Linear:
        return self.module.head

    def parameters(self):
        return self.module.parameters()

    def train(self) -> None:
        self.module.train()

    def values(self, rollout) -> torch.Tensor:
        """V [B, T] of the states before each completion token, without gradient: the V_old of the value loss."""
        with torch.no_grad():
            return completion_values(self.module.decoder(self.policy_model), self.module, rollout)

    def loss(self, micro, values: torch.Tensor | None, totals) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the critic's loss on a micro-batch, aggregated over `totals` like the policy's, its metrics). `values`:
        V from the policy's forward when the critic shares its backbone; None runs the critic's own decoder."""
        if values is None:
            values = self.value_forward(micro)
        token_loss, metrics = self.value_loss(values, micro.values, micro.returns, micro.mask, clip=self.clip)
        loss = self.aggregate(token_loss, micro.mask, totals)
        return loss, {"value_loss": loss.detach(), **metrics}

    def step(self) -> float:
        """One optimiser step on the accumulated gradients (clipped to max_grad_norm); the gradient norm before."""
        grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    def state_dict(self) -> dict[str, dict]:
        """The optimizer's and schedule's states as entries of a checkpoint's trainer state (the weights are
        `module`, saved as the checkpoint's "critic" part)."""
        return {"critic_optimizer": self.optimizer.state_dict(), "critic_scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Back from a checkpoint's trainer state, as state_dict wrote it."""
        self.optimizer.load_state_dict(state["critic_optimizer"])
        self.scheduler.load_state_dict(state["critic_scheduler"])


def value_metrics(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Mean value and return, and the explained variance 1 - Var(R - V) / Var(R) over the real tokens."""
    selected = mask > 0
    v, r = values[selected].float(), returns[selected].float()
    explained = 1 - (r - v).var() / r.var() if len(r) > 1 and float(r.var()) > 0 else torch.tensor(float("nan"))
    return {"critic/values_mean": float(v.mean()), "critic/returns_mean": float(r.mean()),
            "critic/explained_variance": float(explained)}


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
