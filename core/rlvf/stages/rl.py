"""The RL loop: sample groups, score them, estimate advantages, update the policy, repeat.

Every algorithmic choice (advantage estimator, policy loss, loss aggregation, KL estimator) is a registry
entry named in the config, so the loop below never changes when one is added. One step:

    prompts -> G completions each (token ids + sampling log-probs) -> reward mix -> advantages
            -> `epochs` passes of mini-batch updates (micro-batches accumulate gradients) -> metrics

The step's tensors are a Rollout (rlvf.stages.rollout); the forward passes over it are rlvf.models.forward's.
An estimator registered with `needs_values` (gae) gets a critic (rlvf.models.critic.ValueModel): its values are
computed once per rollout, and it is trained alongside the policy on the estimator's returns with a value loss.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rlvf import algorithms
from rlvf.algorithms.advantages import group_stats, step_token_rewards
from rlvf.api.rewards import MixResult, RewardMix, check_task_columns, mix_from_config
from rlvf.api.tasks import Task, task_from_config
from rlvf.config import Config
from rlvf.engine.checkpoint import (
    check_resume,
    latest_checkpoint,
    load_part,
    load_weights,
    restore_rng,
    save_checkpoint,
    say_resuming,
)
from rlvf.engine.data import indices_at
from rlvf.engine.distributed import init_distributed
from rlvf.engine.metrics import MetricsLogger, read_metrics
from rlvf.engine.optim import adamw_with_schedule
from rlvf.engine.rundir import check_run_dir, write_run_config
from rlvf.errors import ConfigError
from rlvf.models.critic import ValueModel, build_critic, value_metrics
from rlvf.models.forward import PolicyForward, completion_logprobs
from rlvf.models.loading import encode_prompts, load_policy
from rlvf.models.lora import adapters_disabled, apply_lora, has_adapters, save_trained
from rlvf.sampling import SamplingParams, build_sampler
from rlvf.stages.evaluate import CORRECT, evaluate, sample_rows, score_samples
from rlvf.stages.rollout import (
    Mismatch,
    Rollout,
    completion_stats,
    loss_tokens_first,
    masked_mean,
    recompute_old_logprobs,
    restore_token_order,
    rollout_from_samples,
    sampler_log_ratio,
    truncated_importance_weights,
)


def _summed(counts) -> dict[str, int]:
    """Per-name counts added up, names with 0 kept."""
    total: dict[str, int] = {}
    for count in counts:
        for name, value in count.items():
            total[name] = total.get(name, 0) + value
    return total


def _merge_results(results: list[MixResult]) -> MixResult:
    """The reward results of every rank as one batch's (rank order); a reward's own metrics are averaged."""
    metrics: dict[str, dict[str, float]] = {}
    for result in results:
        for name, values in result.reward_metrics.items():
            for key, value in values.items():
                metrics.setdefault(name, {})[key] = metrics.get(name, {}).get(key, 0.0) + value / len(results)
    failures, retries = _summed(r.failures for r in results), _summed(r.retries for r in results)
    per_reward = {name: [v for r in results for v in r.per_reward[name]] for name in results[0].per_reward}
    return MixResult(total=[v for r in results for v in r.total], per_reward=per_reward, failures=failures,
                     reward_metrics=metrics, retries=retries)


def _scalar(value) -> float:
    """A float of a tensor, also of a DTensor (FSDP's gradient norm)."""
    return float(value.full_tensor() if hasattr(value, "full_tensor") else value)


class _StepMeans:
    """A step's metrics recorded per micro-batch or optimiser step, averaged over the step (and the ranks)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, Any]) -> None:
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
            self.counts[name] = self.counts.get(name, 0) + 1

    def over_ranks(self, dist) -> dict[str, float]:
        sums, counts = self.sums, self.counts
        if dist.enabled:  # every rank's records; a loss is the sum of the ranks' parts (one record each per step)
            gathered = dist.gather_objects((sums, counts))
            sums = {name: sum(s.get(name, 0.0) for s, _ in gathered) for name in sorted({n for s, _ in gathered
                                                                                        for n in s})}
            counts = {name: sum(c.get(name, 0) for _, c in gathered) // (dist.world_size if name == "loss" else 1)
                      for name in sums}
        return {name: sums[name] / counts[name] for name in sums}


class _Timings(dict):
    """Seconds of each phase of a step: `with timings("time/scoring"): ...`."""

    def __init__(self):
        super().__init__()
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, name: str):
        mark = time.perf_counter()
        yield
        self[name] = time.perf_counter() - mark

    def since_start(self) -> float:
        return time.perf_counter() - self.start


class _NoLogger:
    """Ranks other than 0 log nothing."""

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def log_completions(self, step: int, records: list[dict[str, Any]]) -> None:
        pass

    def close(self) -> None:
        pass


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after a step whose checkpoint was then saved: `rlvf train --resume` continues."""

    def __init__(self, step: int):
        super().__init__(step)
        self.step = step


class _StopRequest:
    """While training: the first SIGINT (Ctrl-C) asks the loop to stop after the current step and save a
    checkpoint; a second one interrupts at once (KeyboardInterrupt; the last saved checkpoint stays whole). Only
    in one process on its main thread: under torchrun the ranks could not agree on the step to stop after."""

    def __init__(self, enabled: bool, step: int):
        import signal
        import threading

        self.requested = False
        self.step = step
        self._signal = signal
        self._previous = None
        if enabled and threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        self._signal.signal(self._signal.SIGINT, self._previous)  # a second Ctrl-C: KeyboardInterrupt
        print(f"\nCtrl-C: stopping after step {self.step + 1} and saving a checkpoint (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    def restore(self) -> None:
        if self._previous is not None and self._signal.getsignal(self._signal.SIGINT) == self._handle:
            self._signal.signal(self._signal.SIGINT, self._previous)


class Trainer:
    def __init__(self, config: Config, registry, resume: bool = False, force_resume: bool = False):
        self.config = config
        self.registry = registry  # the algorithms and samplers are looked up in it
        self.dist = init_distributed(config.train.parallel)  # one process, or a rank of a torchrun launch
        self.task: Task = task_from_config(config.task, registry)
        self.mix: RewardMix = mix_from_config(config.reward, registry, self.task.default_rewards)
        self.accuracy_reward = config.eval.accuracy_reward or self.mix.names[0]
        self.output_dir = Path(config.train.output_dir.format(task=self.task.name))
        # the columns the rewards need, on the first rows of both splits, before a run directory or model exists
        check_task_columns(self.mix, self.task, "train")
        check_task_columns(self.mix, self.task, config.eval.split)
        self._check_run_dir(resume, force_resume)  # before any model is loaded
        self.train_rows = self.task.rows("train")
        if not self.train_rows:
            raise ConfigError(f"task '{self.task.name}' has no training rows")
        self._check_algorithm()
        self._check_parallel()
        if self.dist.fsdp and config.model.lora is not None:
            raise ConfigError("model.lora with train.parallel = 'fsdp' is not supported: use train.parallel = 'ddp' "
                              "(with LoRA each rank holds the frozen weights once and only the adapters train)")

        torch.manual_seed(config.seed)
        self.policy = load_policy(config.model)
        self.model, self.tokenizer = self.policy.model, self.policy.tokenizer
        if config.train.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        # The reference policy (algorithm.beta > 0): a frozen copy of the initial policy; with LoRA the policy itself
        # with its adapters off (compute_advantages), no second copy of the weights.
        self.reference = None
        if config.algorithm.beta > 0 and config.model.lora is None:
            self.reference = load_policy(config.model).model.eval().requires_grad_(False)
        self.sampler = build_sampler(registry, config.sampling, self.model, self.tokenizer, path=self.policy.path,
                                     seed=config.seed)
        if config.train.progress and self.dist.is_main:
            print(f"sampler: {self.sampler.description}", file=sys.stderr, flush=True)
        if self.dist.fsdp and self.sampler.name != "hf":
            raise ConfigError("train.parallel = 'fsdp' samples with the HF sampler only: set sampling.sampler = 'hf' "
                              "(or use train.parallel = 'ddp')")
        self._build_critic()
        # LoRA after the critic: a critic with a decoder of its own copies the base weights and trains fully; one on
        # the policy's backbone trains its head, and the adapters with the policy's loss.
        apply_lora(self.model, config.model.lora)
        if config.algorithm.beta > 0 and has_adapters(self.model):
            self.reference = self.model
        # The modules whose forward passes train: as they are on one process, under DDP, or sharded by FSDP2 (the
        # decoder layers as units), which is why the optimizer is built after them.
        shared_head = self.critic.module if self.critic is not None and self.critic.shares_policy else None
        self.policy_forward = self.dist.wrap(PolicyForward(self.model, shared_head),
                                             shard_layers=list(getattr(self.model.get_decoder(), "layers", [])))
        self.optimizer, self.scheduler = self._optimizer([p for p in self.model.parameters() if p.requires_grad],
                                                         config.train.lr)  # with LoRA: the adapters
        self.step = 0
        self.last_checkpoint: int | None = None  # the step of the last checkpoint saved or resumed from
        self._scored = None  # (rows, MixResult) of the last step, for train.log_completions_every
        if resume:
            self._load_checkpoint()
        self.dist.barrier()  # every rank looked at the output directory before rank 0 writes to it
        if self.dist.is_main:
            write_run_config(self.output_dir, config.model_dump(mode="json"))
        self.logger = MetricsLogger(self.output_dir, config.train.report_to, resume_step=self.step,
                                    config=config.model_dump()) if self.dist.is_main else _NoLogger()
        if self.step > 0:  # resumed: the sampler's engine (if it has its own) loaded the initial weights
            self.sampler.sync_weights(self.model)

    # --- configuration checks and schedules ---

    def _check_run_dir(self, resume: bool, force_resume: bool) -> None:
        """The run directory can hold this run (rlvf.engine.rundir.check_run_dir); on --resume, it was started with
        the same training-relevant config (or --force-resume)."""
        if self.config.train.keep_checkpoints < 0:
            raise ConfigError("train.keep_checkpoints must be 0 (keep all) or more")
        if self.config.train.log_completions_every < 0:
            raise ConfigError("train.log_completions_every must be 0 (off) or more")
        check_run_dir(self.output_dir, "train.output_dir", resume=resume, command="--resume")  # on every rank
        if resume:
            check_resume(self.output_dir, self.config.model_dump(mode="json"), force_resume, say=self.dist.is_main)

    def _check_algorithm(self) -> None:
        a = self.config.algorithm
        known = self.registry.algorithms
        for entries, name in ((known.advantage, a.advantage), (known.policy_loss, a.policy_loss),
                              (known.loss_aggregation, a.loss_aggregation), (known.kl_estimator, a.kl_estimator)):
            entries.get_checked(name)
        if algorithms.declared(known.advantage[a.advantage], "needs_values"):
            known.value_loss.get_checked(self.config.critic.value_loss)
        t = self.config.train
        batch = t.prompts_per_step * t.group_size
        if t.mini_batch_size is not None and (t.mini_batch_size <= 0 or batch % t.mini_batch_size):
            raise ConfigError(f"train.mini_batch_size = {t.mini_batch_size} must divide the "
                              f"{batch} sequences of a step (prompts_per_step x group_size)")
        if t.group_size < 2 and algorithms.declared(self.registry.algorithms.advantage[a.advantage], "needs_groups"):
            raise ConfigError(f"train.group_size must be >= 2 for the group-relative advantages of '{a.advantage}'")

    def _check_parallel(self) -> None:
        t, world = self.config.train, self.dist.world_size
        if t.prompts_per_step % world:
            raise ConfigError(f"train.prompts_per_step = {t.prompts_per_step} must be divisible by the {world} ranks "
                              "(each samples and scores an equal share of a step's prompts)")
        if self.dist.fsdp and algorithms.declared(self.registry.algorithms.advantage[self.config.algorithm.advantage],
                                                  "needs_values"):
            raise ConfigError(f"train.parallel = 'fsdp' with a critic ('{self.config.algorithm.advantage}') is not "
                              "supported: use train.parallel = 'ddp'")

    def _build_critic(self) -> None:
        """A value model with its own AdamW and schedule, iff the advantage estimator needs values."""
        self.critic: ValueModel | None = None
        if not algorithms.declared(self.registry.algorithms.advantage[self.config.algorithm.advantage], "needs_values"):
            return
        c = self.config.critic
        critic = build_critic(c, self.model, vocab_size=len(self.tokenizer))
        optimizer, scheduler = self._optimizer(critic.parameters(), c.lr)
        self.critic = ValueModel(critic, self.model, optimizer=optimizer, scheduler=scheduler,
                                 value_loss=self.registry.algorithms.value_loss[c.value_loss],
                                 aggregate=self.registry.algorithms.loss_aggregation[self.config.algorithm.loss_aggregation],
                                 clip=c.value_clip, max_grad_norm=self.config.train.max_grad_norm, dist=self.dist)

    def _max_completion_tokens(self) -> int:
        """The longest a completion can be: sampling.max_new_tokens, or an environment's episode budget."""
        if self.task.environment is not None:
            return self.task.environment.option("max_tokens")
        return self.config.sampling.max_new_tokens

    def _optimizer_steps_per_step(self) -> int:
        t = self.config.train
        batch = t.prompts_per_step * t.group_size
        return t.epochs * (batch // (t.mini_batch_size or batch))

    def _optimizer(self, parameters, lr: float):
        """AdamW and its schedule (rlvf.engine.optim) over every optimiser step of the run, for the policy or the
        critic."""
        t = self.config.train
        return adamw_with_schedule(parameters, lr=lr, weight_decay=t.weight_decay, betas=t.adam_betas,
                                   total=max(t.steps * self._optimizer_steps_per_step(), 1), warmup=t.warmup_steps,
                                   schedule=t.lr_schedule)

    # --- data ---

    def prompts_for_step(self, step: int) -> list[dict[str, Any]]:
        """The rows of a step: a seeded shuffle per pass over the data, so any step's prompts are known
        from (seed, step) alone and a resumed run sees exactly what an uninterrupted one does."""
        n, rows = self.config.train.prompts_per_step, self.train_rows
        return [rows[i] for i in indices_at(self.config.seed, len(rows), step * n, (step + 1) * n)]

    # --- one step ---

    def rollout(self, rows: list[dict[str, Any]]) -> tuple[Rollout, Any, dict[str, float]]:
        """This rank's completions of `rows` (group_size each) as a Rollout, the sampler's Samples, and the
        completions' length statistics."""
        s, t = self.config.sampling, self.config.train
        params = SamplingParams(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                                n=t.group_size, stop=s.stop)
        prompt_ids = encode_prompts(self.tokenizer, [r["prompt"] for r in rows])
        seed = self.config.seed * 1_000_003 + self.step + 7_919_000_003 * self.dist.rank  # ranks sample apart
        with self.dist.full_weights(self.policy_forward):
            samples = sample_rows(self.sampler, self.tokenizer, self.task, rows, prompt_ids, params, self.mix,
                                  self.accuracy_reward, seed=seed)
        # groups numbered across ranks (rank r holds prompts r * len(rows) ...), as in a single process
        rollout = rollout_from_samples(prompt_ids, samples, pad_id=self.tokenizer.pad_token_id,
                                       mask_truncated=t.mask_truncated, device=self.policy.device,
                                       first_group=self.dist.rank * len(rows))
        return rollout, samples, completion_stats(samples, self.dist)

    def on_policy(self) -> bool:
        """Whether each rollout feeds exactly one optimiser step (one epoch, one mini-batch) and nothing reads its
        old log-probs before the update (a KL penalty in the reward does): pi_old is then the policy of that step,
        and the update's own forward gives the old log-probs (ratio exactly 1), with no separate pass."""
        a = self.config.algorithm
        return self._optimizer_steps_per_step() == 1 and not (a.beta > 0 and a.kl_in == "reward")

    def recompute_old_logprobs(self, rollout: Rollout) -> dict[str, float]:
        """The trainer's own old log-probs for a sampler that computes them another way (vLLM), truncated
        importance weights if algorithm.tis_cap is set, and the mismatch metrics (rlvf.stages.rollout)."""
        return recompute_old_logprobs(rollout, self.model, temperature=self.config.sampling.temperature,
                                      tis_cap=self.config.algorithm.tis_cap, dist=self.dist,
                                      wrapped_policy=self.policy_forward)

    def score(self, rows, samples) -> tuple[torch.Tensor, dict[str, float]]:
        _, result = score_samples(self.mix, rows, samples)
        self._scored = (rows, samples, result)  # this rank's, for train.log_completions_every
        scores = torch.tensor([0.0 if v is None else v for v in result.total])
        if self.dist.enabled:  # metrics of the whole step's batch
            result = _merge_results(self.dist.gather_objects(result))
        metrics = result.metrics()
        correct = [(v or 0.0) >= CORRECT for v in result.per_reward[self.accuracy_reward]]
        metrics["accuracy"] = sum(correct) / len(correct)
        return scores, metrics

    def compute_advantages(self, rollout: Rollout, scores: torch.Tensor) -> dict[str, float]:
        a = self.config.algorithm
        metrics: dict[str, float] = {}
        token_kl = kl_penalty = None
        if self.reference is not None:
            training = self.reference.training
            self.reference.eval()  # with LoRA the reference is the policy, which trains: no dropout here
            # no graph is kept, and completion_logprobs already goes group by group
            with torch.no_grad(), adapters_disabled(self.reference):
                rollout.ref_logprobs, _ = completion_logprobs(self.reference, rollout, self.config.sampling.temperature)
            self.reference.train(training)
            kl_estimator = self.registry.algorithms.kl_estimator[a.kl_estimator]
            token_kl = kl_estimator(rollout.old_logprobs, rollout.ref_logprobs).cpu()
            if a.kl_in == "reward":  # the estimator decides how (sequence_rewards() or token_rewards())
                kl_penalty = a.beta * token_kl * rollout.mask.cpu()
        if self.critic is not None:  # the values of the critic that saw the rollout: V_old of the value loss
            rollout.values = self.critic.values(rollout)
        step_rewards, step_part = self._step_rewards(rollout.mask.shape[1])
        inputs = algorithms.AdvantageInputs(scores=scores, group_ids=rollout.group_ids, mask=rollout.mask.cpu(),
                                            token_kl=token_kl, kl_penalty=kl_penalty,
                                            values=None if rollout.values is None else rollout.values.cpu(),
                                            step_rewards=step_rewards, step_part=step_part)
        rows, width = rollout.mask.shape
        if self.dist.enabled:  # the estimator sees the whole step's batch, as in one process; each rank keeps its rows
            inputs = algorithms.AdvantageInputs(**{name: self.dist.gather_rows(value)
                                                   for name, value in vars(inputs).items()})
        estimator = self.registry.algorithms.advantage[a.advantage]
        order = None
        if rollout.generated is not None:  # episodes: the tokens an environment inserted are passed over
            inputs, order = loss_tokens_first(inputs)
        result = algorithms.call_with_options(
            estimator, inputs, options=a.advantage_options, what=f"advantage estimator '{a.advantage}'")
        if not isinstance(result, algorithms.Advantages):
            result = algorithms.Advantages(advantages=result)
        if order is not None:
            inputs, result = restore_token_order(inputs, result, order)
        rollout.advantages = self.dist.own_rows(result.advantages, rows, width).to(rollout.mask.device)
        metrics["advantage/abs_mean"] = masked_mean(result.advantages.abs(), inputs.mask)
        if self.critic is not None:
            if result.returns is None:
                raise ConfigError(f"advantage estimator '{a.advantage}' needs values but returns no returns "
                                  "(algorithms.Advantages) for the critic to learn from")
            rollout.returns = self.dist.own_rows(result.returns, rows, width).to(rollout.mask.device)
            metrics |= value_metrics(inputs.values, result.returns, inputs.mask)
        return metrics

    def _step_rewards(self, width: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """AdvantageInputs.step_rewards and step_part of the last scored batch (algorithms.step_token_rewards);
        (None, None) without step rewards, with algorithm.step_rewards = "reduce", or with reward.aggregation =
        "normalize_then_sum" (whose standardised reductions are not a weighted sum of steps: token estimators then
        see the reductions, as group estimators do)."""
        _, samples, result = self._scored
        if not result.steps:
            return None, None
        if samples.messages is not None:
            raise ConfigError(f"reward '{next(iter(result.steps))}' returned step scores, and task.environment is "
                              "set: step rewards with environments are not supported yet")
        if self.config.algorithm.step_rewards == "reduce" or self.mix.aggregation != "sum":
            return None, None
        return step_token_rewards(self.tokenizer, samples.completion_ids, samples.texts, result.steps,
                                  {entry.name: entry.weight for entry in self.mix.entries}, result.per_reward, width)

    def update(self, rollout: Rollout) -> dict[str, float]:
        """`epochs` passes of mini-batch optimiser steps over the rollout; micro-batches accumulate.

        Under torchrun each rank holds its share of the step's rows: an optimiser step takes every rank's share of
        a mini-batch, the loss normalisers count the whole mini-batch, and each rank's loss is scaled by the world
        size (DDP and FSDP average gradients). Ranks run as many micro-batches each, a rank short of rows running
        stand-ins that add nothing (Rollout.stand_in), so that their collective operations match.

        An on-policy rollout (Rollout.on_policy) takes its old log-probs from the forward of its one optimiser step,
        and the mismatch with the sampler's log-probs (if it has them) over the rows trained on.
        """
        t, dist = self.config.train, self.dist
        if rollout.on_policy and self._optimizer_steps_per_step() != 1:
            raise ValueError("an on-policy rollout feeds exactly one optimiser step (train.epochs = 1, one mini-batch)")
        mismatch = (Mismatch(self.config.algorithm.tis_cap)
                    if rollout.on_policy and rollout.sampler_logprobs is not None else None)
        batch = 0 if rollout.padding else rollout.input_ids.shape[0]
        global_batch = dist.sum(batch)
        mini = t.mini_batch_size or global_batch
        means = _StepMeans()
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.step)
        self.model.train()
        if self.critic is not None:
            self.critic.train()
        for epoch in range(t.epochs):
            order = (torch.randperm(batch, generator=generator) if t.epochs > 1 or mini < global_batch
                     else torch.arange(batch))
            if dist.enabled:  # this rank's share of each mini-batch
                chunks = list(torch.tensor_split(order, math.ceil(global_batch / mini)))
            else:
                chunks = [order[start: start + mini] for start in range(0, batch, mini)]
            for rows in chunks:
                part = rollout.select(rows) if len(rows) else rollout.stand_in()
                self._mini_batch_step(part, len(rows), means, with_entropy=epoch == 0, mismatch=mismatch)
        metrics = means.over_ranks(dist)
        if mismatch is not None:
            metrics |= mismatch.metrics(dist)
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        return metrics

    def _mini_batch_step(self, part: Rollout, rows: int, means: _StepMeans, with_entropy: bool,
                         mismatch: Mismatch | None = None) -> None:
        """One optimiser step on this rank's `rows` rows (`part`) of a mini-batch: its micro-batches accumulate
        gradients, which are reduced over the ranks in the backward of the last. Each real micro-batch's metrics,
        then the step's loss and gradient norms, go to `means` (and its mismatch to `mismatch`)."""
        t, dist = self.config.train, self.dist
        totals = algorithms.BatchTotals(sequences=dist.sum(rows), tokens=dist.sum(int(part.mask.sum())),
                                        max_tokens=self._max_completion_tokens())
        critic_forward = self.critic.value_forward if self.critic is not None else None
        wrapped = [m for m in (self.policy_forward, critic_forward) if m is not None]
        # A group's completions kept together: its prompt then runs once per micro-batch.
        by_group = torch.argsort(part.group_ids, stable=True)
        starts = list(range(0, rows, t.micro_batch_size))
        micro_batches = int(dist.max(len(starts))) if dist.enabled else len(starts)
        mini_batch_loss = 0.0
        for index in range(micro_batches):
            real = index < len(starts)
            micro = (part.select(by_group[starts[index]: starts[index] + t.micro_batch_size]) if real
                     else part.stand_in())
            with dist.accumulating(wrapped, sync=index == micro_batches - 1):
                loss, critic_loss, metrics = self._micro_batch_loss(micro, totals, with_entropy, mismatch)
                if critic_loss is not None:
                    (critic_loss * dist.world_size).backward()
                (loss * dist.world_size).backward()  # DDP and FSDP average over ranks: the sum is wanted
            mini_batch_loss += float(loss.detach())  # micro-batch losses add up to the mini-batch's
            if real:
                means.add(metrics)
        means.add({"loss": mini_batch_loss,
                   "grad_norm": _scalar(torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.max_grad_norm))})
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.critic is not None:
            means.add({"critic/grad_norm": self.critic.step()})

    def _micro_batch_loss(self, micro: Rollout, totals: algorithms.BatchTotals, with_entropy: bool,
                          mismatch: Mismatch | None = None) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
        """(the policy's loss on a micro-batch: its policy loss, times the TIS weights, plus beta * KL when
        algorithm.kl_in = "loss", aggregated over `totals`, plus vf_coef times the loss of a critic that shares
        its backbone; the loss of a critic with a decoder of its own, else None; the micro-batch's metrics).
        On-policy, the old log-probs are this forward's, detached, and so are the TIS weights' and `mismatch`'s."""
        a = self.config.algorithm
        policy_loss = self.registry.algorithms.policy_loss[a.policy_loss]
        aggregate = self.registry.algorithms.loss_aggregation[a.loss_aggregation]
        logprobs, entropy, values = self.policy_forward(micro, self.config.sampling.temperature,
                                                        with_entropy=with_entropy)
        old_logprobs, tis_weights = micro.old_logprobs, micro.tis_weights
        if micro.on_policy:
            old_logprobs = logprobs.detach()
            if micro.sampler_logprobs is not None:
                log_ratio, real = sampler_log_ratio(logprobs, micro)
                if a.tis_cap is not None:
                    tis_weights = truncated_importance_weights(log_ratio, a.tis_cap)
                if mismatch is not None and not micro.padding:
                    mismatch.add(log_ratio, real)
        token_loss, loss_metrics = algorithms.call_with_options(
            policy_loss, logprobs, old_logprobs, micro.advantages, micro.mask,
            options=a.policy_loss_options, what=f"policy loss '{a.policy_loss}'")
        if tis_weights is not None:  # the tokens came from the sampler's policy, not the old one
            token_loss = token_loss * tis_weights
        metrics: dict[str, Any] = {}
        if self.reference is not None:
            kl = self.registry.algorithms.kl_estimator[a.kl_estimator](logprobs, micro.ref_logprobs)
            if a.kl_in == "loss":
                token_loss = token_loss + a.beta * kl
            metrics["kl"] = masked_mean(kl.detach(), micro.mask)
        loss = aggregate(token_loss, micro.mask, totals)
        critic_loss = None
        if self.critic is not None:  # `values`: from the policy's forward when the critic shares its backbone
            critic_loss, critic_metrics = self.critic.loss(micro, values, totals)
            metrics |= critic_metrics
            if self.critic.shares_policy:  # one backward through the shared backbone
                loss, critic_loss = loss + self.config.critic.vf_coef * critic_loss, None
        metrics |= loss_metrics
        if entropy is not None:
            metrics["entropy"] = masked_mean(entropy, micro.mask)
        metrics["ratio/mean"] = masked_mean(torch.exp(logprobs.detach() - old_logprobs), micro.mask)
        return loss, critic_loss, metrics

    def _rows_to_train(self, rollout: Rollout, scores: torch.Tensor) -> tuple[Rollout | None, dict[str, float]]:
        """The rows of the rollout the update trains on: all, or with train.dynamic_sampling those of groups whose
        scores differ (a group scored alike has no advantage to learn from); a stand-in on a rank left without rows
        while others have some; None if no rank has any."""
        keep = list(range(len(scores)))
        metrics: dict[str, float] = {}
        if self.config.train.dynamic_sampling:
            all_scores, all_groups = self.dist.gather_rows(scores), self.dist.gather_rows(rollout.group_ids)
            _, _, constant = group_stats(all_scores, all_groups)
            constant = self.dist.own_rows(constant, len(scores))
            keep = [i for i in keep if not constant[i]]
            metrics["dynamic_sampling/kept"] = self.dist.sum(len(keep)) / len(all_scores)
        if not self.dist.sum(len(keep)):  # over all ranks: a rank left without rows still takes part in the update
            return None, metrics
        return rollout if len(keep) == len(scores) else rollout.select(keep) if keep else rollout.stand_in(), metrics

    def train_step(self) -> dict[str, float]:
        """One step: sample this rank's share of the step's prompts, score, estimate advantages, update the policy
        (and the critic); its metrics and timings, which `run` logs."""
        timings = _Timings()
        rows = self.prompts_for_step(self.step)
        share = len(rows) // self.dist.world_size
        rows = rows[self.dist.rank * share: (self.dist.rank + 1) * share]  # this rank's prompts (all, on one)
        with timings("time/sampling"):
            rollout, samples, metrics = self.rollout(rows)
        rollout.on_policy = self.on_policy()
        if rollout.on_policy and not self.sampler.exact_logprobs:  # compared with the update's own forward
            rollout.sampler_logprobs = rollout.old_logprobs
        elif not self.sampler.exact_logprobs:
            with timings("time/old_logprobs"):
                metrics |= self.recompute_old_logprobs(rollout)
        with timings("time/scoring"):
            scores, reward_metrics = self.score(rows, samples)
            metrics |= reward_metrics
        with timings("time/training"):
            metrics |= self.compute_advantages(rollout, scores)
            train_on, kept_metrics = self._rows_to_train(rollout, scores)
            metrics |= kept_metrics | (self.update(train_on) if train_on is not None else {})
        if train_on is not None:  # the next step samples from the updated policy
            timings["time/weight_sync"] = self.sampler.sync_weights(self.model)
        timings["time/step"] = timings.since_start()
        metrics["tokens_per_second"] = metrics["tokens/generated"] / timings["time/step"]
        return metrics | timings

    # --- the loop ---

    def run(self) -> dict[str, Any]:
        """Train to `train.steps`, evaluating before and after; a finished run resumed returns its results."""
        t = self.config.train
        results_file = self.output_dir / "results.json"
        if self.step >= t.steps and results_file.is_file():
            return json.loads(results_file.read_text())
        results: dict[str, Any] = {}
        if t.eval_before and self.step == 0:
            results["before"] = self.evaluate()
            self.logger.log(0, {f"eval/{k}": v for k, v in results["before"].items()})
        elif t.eval_before:  # resumed: the evaluation before training was logged at step 0
            logged = [r for r in read_metrics(self.output_dir)
                      if r["step"] == 0 and any(k.startswith("eval/") for k in r)]
            if logged:
                results["before"] = {k.removeprefix("eval/"): v for k, v in logged[0].items() if k != "step"}
        progress = _progress(t.steps, self.step, enabled=t.progress and self.dist.is_main)
        stop = _StopRequest(enabled=not self.dist.enabled, step=self.step)
        try:
            while self.step < t.steps and not stop.requested:
                metrics = self.train_step()
                self.step = stop.step = self.step + 1
                self.logger.log(self.step, metrics)
                if t.log_completions_every and self.step % t.log_completions_every == 0:
                    self._log_completions()
                progress.update(1)
                progress.set_postfix(reward=f"{metrics.get('reward/mean', 0):.3f}", acc=f"{metrics['accuracy']:.2f}")
                if t.eval_every and self.step % t.eval_every == 0 and self.step < t.steps and not stop.requested:
                    self.logger.log(self.step, {f"eval/{k}": v for k, v in self.evaluate().items()})
                if t.save_every and (self.step % t.save_every == 0 or self.step == t.steps):
                    self.save_checkpoint()
            if stop.requested:
                if self.last_checkpoint != self.step:
                    self.save_checkpoint()
                raise TrainingInterrupted(self.step)
        except BaseException:
            self.logger.close()  # what was logged is on disk; a resume truncates it to its checkpoint
            raise
        finally:
            stop.restore()
            progress.close()
        results["after"] = self.evaluate()
        self.logger.log(self.step, {f"eval/{k}": v for k, v in results["after"].items()})
        final = self.output_dir / "final"
        self._save_policy(final)
        self.logger.close()
        results["final_model"] = str(final)
        if self.dist.is_main:
            results_file.write_text(json.dumps(results, indent=2))
        self.dist.barrier()
        return results

    def _log_completions(self) -> None:
        """The step's completions (this rank's) with each reward's score and the mix, to completions.jsonl."""
        if self._scored is None:
            return
        rows, samples, result = self._scored
        self.logger.log_completions(self.step, [
            {"prompt": rows[samples.prompt_index(i)]["prompt"], "completion": text,
             "rewards": {name: values[i] for name, values in result.per_reward.items()}, "reward": result.total[i]}
            for i, text in enumerate(samples.texts)])

    def evaluate(self) -> dict[str, float]:
        # The HF sampler runs on the trainer's model with eval.batch_size; a vLLM engine is reused (its weights
        # were synced after the last optimiser step). Under torchrun, rank 0 evaluates and tells the others.
        sampler = None if self.sampler.exact_logprobs else self.sampler
        summary = None
        with self.dist.full_weights(self.policy_forward):
            if self.dist.is_main:
                summary = evaluate(self.model, self.tokenizer, self.task, self.mix, self.config.eval,
                                   seed=self.config.seed, sampler=sampler).summary()
        return self.dist.gather_objects(summary)[0]

    # --- checkpoints ---

    def _parameter_names(self) -> list[str]:
        return [name for name, p in self.model.named_parameters() if p.requires_grad]  # the optimizer's, in order

    def _full_policy_weights(self) -> dict[str, torch.Tensor] | None:
        """Under FSDP the policy's full weights, gathered from the shards (all ranks call this; rank 0 gets them),
        its own keys only (a tied LM head once, as save_pretrained saves it); None: the model holds them whole."""
        full = self.dist.full_state(self.policy_forward, prefix="policy.")
        if full is None or not self.dist.is_main:
            return None
        own = set(self._parameter_names()) | {name for name, _ in self.model.named_buffers()}
        return {key: value for key, value in full.items() if key in own}

    def _save_policy(self, directory: Path) -> None:
        """The policy's full weights and tokenizer as a HF directory, written by rank 0 (all ranks call this); with
        LoRA the merged weights, and the adapters in directory/adapter/ (rlvf.models.lora.save_trained)."""
        full = self._full_policy_weights()
        if not self.dist.is_main:
            return
        save_trained(self.model, self.tokenizer, directory, full)

    def save_checkpoint(self) -> Path:
        """Full (unsharded) weights, or with LoRA the adapters, and optimizer state, whatever the number of ranks:
        any number resumes it (rlvf.engine.checkpoint: a kill or Ctrl-C at any moment leaves the previous
        checkpoints as they were)."""
        optimizer_state = (self.dist.full_optimizer_state(self.policy_forward, self.optimizer, self._parameter_names(),
                                                          prefix="policy.")
                           if self.dist.fsdp else self.optimizer.state_dict())
        weights = self._full_policy_weights()
        target = self.output_dir / "checkpoints" / f"step-{self.step:06d}"
        if self.dist.is_main:  # rank 0 writes it
            critic = {} if self.critic is None else self.critic.state_dict()
            target = save_checkpoint(self.output_dir, self.step, self.model, optimizer_state=optimizer_state,
                                     scheduler_state=self.scheduler.state_dict(),
                                     data_position=self.step * self.config.train.prompts_per_step,
                                     keep=self.config.train.keep_checkpoints, weights=weights,
                                     tokenizer=self.tokenizer, state=critic,
                                     parts=None if self.critic is None else {"critic": self.critic.module})
        self.last_checkpoint = self.step
        self.dist.barrier()
        return target

    def _load_checkpoint(self) -> None:
        """Resume from the newest checkpoint that is whole; damaged ones are named and skipped."""
        checkpoint = latest_checkpoint(self.output_dir, "train.output_dir", say=self.dist.is_main)
        if checkpoint is None:
            return
        weights, state = checkpoint.weights, checkpoint.state
        if self.dist.fsdp:  # every rank reads the full weights and keeps its shards
            own = set(self._parameter_names())
            if [k for k in own if k not in weights and "lm_head" not in k]:
                raise ConfigError(f"checkpoint {checkpoint.directory} does not fit the model: missing "
                                  f"{sorted(k for k in own if k not in weights)}")
            self.dist.load_full_state(self.policy_forward, weights, prefix="policy.")
            self.dist.load_full_optimizer_state(self.policy_forward, self.optimizer, state["optimizer"],
                                                self._parameter_names(), prefix="policy.")
        else:
            load_weights(self.model, checkpoint)
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.critic is not None:
            if "critic" not in checkpoint.parts or "critic_optimizer" not in state:
                raise ConfigError(f"checkpoint {checkpoint.directory} has no critic, but "
                                  f"'{self.config.algorithm.advantage}' needs one: it was written by a run of another "
                                  "algorithm")
            load_part(self.critic.module, checkpoint, "critic")
            self.critic.load_state_dict(state)
        restore_rng(checkpoint)
        self.step = self.last_checkpoint = checkpoint.step
        if self.dist.is_main:
            say_resuming(self.output_dir, checkpoint, self.config.train.steps)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", disable=not enabled, dynamic_ncols=True)
