"""The HF sampler's own decode loop against transformers' generate and a full forward pass."""

from __future__ import annotations

import pytest
import torch

from rlvf.config import ModelConfig
from rlvf.models.loading import encode_prompts, load_policy
from rlvf.sampling import HFSampler, SamplingParams
from rlvf.stages.evaluate import pass_at_k

PROMPTS = [[{"role": "user", "content": "Calculate 2 + 3."}], "plain text prompt", [{"role": "user", "content": "Hi"}]]


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(ModelConfig(name=str(tiny_model_dir)))


def test_greedy_matches_transformers_generate(policy):
    ids = encode_prompts(policy.tokenizer, PROMPTS)
    samples = HFSampler(policy.model, policy.tokenizer).sample(ids, SamplingParams(temperature=0, max_new_tokens=12))
    for prompt_ids, completion in zip(ids, samples.completion_ids, strict=True):
        reference = policy.model.generate(torch.tensor([prompt_ids]), max_new_tokens=12, do_sample=False,
                                          pad_token_id=policy.tokenizer.pad_token_id)
        assert completion == reference[0, len(prompt_ids):].tolist()[: len(completion)]


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
def test_logprobs_equal_a_full_forward_pass_at_the_sampling_temperature(policy, temperature):
    ids = encode_prompts(policy.tokenizer, PROMPTS)
    params = SamplingParams(temperature=temperature, max_new_tokens=10, n=2)
    samples = HFSampler(policy.model, policy.tokenizer, batch_size=4).sample(ids, params, seed=0)
    assert len(samples.completion_ids) == 6
    for i, completion in enumerate(samples.completion_ids):
        prompt = ids[samples.prompt_index(i)]
        with torch.no_grad():
            logits = policy.model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1: -1]
        scale = temperature if temperature > 0 else 1.0
        expected = torch.log_softmax(logits / scale, -1).gather(1, torch.tensor(completion)[:, None]).squeeze(1)
        assert torch.allclose(torch.tensor(samples.logprobs[i]), expected, atol=1e-4)


def test_seeded_sampling_is_reproducible_and_truncation_is_flagged(policy):
    ids = encode_prompts(policy.tokenizer, PROMPTS)
    sampler = HFSampler(policy.model, policy.tokenizer)
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=8, n=3)
    first, second = sampler.sample(ids, params, seed=5), sampler.sample(ids, params, seed=5)
    assert first.completion_ids == second.completion_ids and first.texts == second.texts
    assert sampler.sample(ids, params, seed=6).completion_ids != first.completion_ids
    eos = policy.tokenizer.eos_token_id
    for completion, truncated in zip(first.completion_ids, first.truncated, strict=True):
        assert truncated == (len(completion) == 8 and completion[-1] != eos)


def test_stop_strings_cut_text_and_tokens(policy):
    ids = encode_prompts(policy.tokenizer, PROMPTS[:1])
    sampler = HFSampler(policy.model, policy.tokenizer)
    full = sampler.sample(ids, SamplingParams(temperature=0, max_new_tokens=16))
    text = full.texts[0]
    stop = text[3:5]  # a stop string that occurs in the greedy completion
    cut = sampler.sample(ids, SamplingParams(temperature=0, max_new_tokens=16, stop=[stop]))
    assert cut.texts[0] == text[: text.find(stop) + len(stop)]
    assert len(cut.completion_ids[0]) == len(cut.logprobs[0]) <= len(full.completion_ids[0])
    assert cut.truncated == [False]


def test_pass_at_k_against_hand_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 3, 2) == 1.0


def test_prefix_shared_training_logprobs_equal_a_full_forward(policy):
    """The trainer runs each prompt once and repeats its KV cache for the group's completions; the result
    must equal running every prompt + completion through the model on its own."""
    from rlvf.models.forward import completion_logprobs
    from rlvf.stages.rollout import Rollout

    ids = encode_prompts(policy.tokenizer, PROMPTS)
    samples = HFSampler(policy.model, policy.tokenizer).sample(ids, SamplingParams(max_new_tokens=9, n=3), seed=1)
    sequences = [ids[samples.prompt_index(i)] + c for i, c in enumerate(samples.completion_ids)]
    width, steps = max(map(len, sequences)), max(map(len, samples.completion_ids))
    rollout = Rollout(
        input_ids=torch.tensor([s + [2] * (width - len(s)) for s in sequences]),
        attention_mask=torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences]),
        completion_start=torch.tensor([len(ids[samples.prompt_index(i)]) for i in range(len(sequences))]),
        completion_ids=torch.tensor([c + [-1] * (steps - len(c)) for c in samples.completion_ids]),
        mask=torch.tensor([[1.0] * len(c) + [0.0] * (steps - len(c)) for c in samples.completion_ids]),
        old_logprobs=torch.zeros(len(sequences), steps), group_ids=torch.tensor([i // 3 for i in range(9)]))
    shuffled = rollout.select([4, 0, 8, 1, 3, 7, 2, 6, 5])  # groups interleaved, as in a shuffled mini-batch
    logprobs, entropy = completion_logprobs(policy.model, shuffled, temperature=0.8, with_entropy=True)
    for row, original in enumerate([4, 0, 8, 1, 3, 7, 2, 6, 5]):
        prompt, completion = ids[original // 3], samples.completion_ids[original]
        with torch.no_grad():
            logits = policy.model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1: -1] / 0.8
        expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(completion)[:, None]).squeeze(1)
        assert torch.allclose(logprobs[row, : len(completion)], expected, atol=1e-4)
        assert entropy[row, 0] > 0


@pytest.fixture(scope="module")
def char_policy(char_model_dir):
    """Over 46 symbols the end token has a real chance at every step: rows finish at different steps."""
    return load_policy(ModelConfig(name=str(char_model_dir)))


CHAR_PROMPTS = ["1+2=", "say a digit:", "abc", "7 ? 8 = "]


@pytest.mark.parametrize("params", [SamplingParams(temperature=1.0, max_new_tokens=30, n=3),
                                    SamplingParams(temperature=0.8, top_p=0.9, max_new_tokens=30, n=3),
                                    SamplingParams(temperature=0, max_new_tokens=30, n=2)])
def test_a_prompt_prefilled_once_samples_what_per_copy_prefills_sample(char_policy, params):
    """n completions of a prompt share one prefill; the same prompt given n times as separate prompts is
    prefilled n times. Same rows, same seed: the same tokens and log-probs (batches of 4 rows split groups)."""
    from dataclasses import replace

    ids = encode_prompts(char_policy.tokenizer, CHAR_PROMPTS)
    sampler = HFSampler(char_policy.model, char_policy.tokenizer, batch_size=4)
    shared = sampler.sample(ids, params, seed=3)
    copies = sampler.sample([prompt for prompt in ids for _ in range(params.n)], replace(params, n=1), seed=3)
    assert shared.completion_ids == copies.completion_ids
    for mine, theirs in zip(shared.logprobs, copies.logprobs, strict=True):
        assert torch.allclose(torch.tensor(mine), torch.tensor(theirs), atol=1e-6)
    if params.temperature > 0:
        assert len({len(ids) for ids in shared.completion_ids}) > 2  # rows finished at different steps


def test_finished_rows_leaving_the_batch_change_nothing(char_policy, monkeypatch):
    import rlvf.sampling.hf as hf

    ids = encode_prompts(char_policy.tokenizer, CHAR_PROMPTS)
    sampler = HFSampler(char_policy.model, char_policy.tokenizer)
    params = SamplingParams(temperature=1.0, max_new_tokens=40, n=4)
    leaving = sampler.sample(ids, params, seed=11)
    monkeypatch.setattr(hf, "LEAVE_WHEN_FINISHED", 2.0)  # never: every row decodes to the end
    staying = sampler.sample(ids, params, seed=11)
    assert leaving.completion_ids == staying.completion_ids
    for mine, theirs in zip(leaving.logprobs, staying.logprobs, strict=True):
        assert torch.allclose(torch.tensor(mine), torch.tensor(theirs), atol=1e-5)
    ended = [c[-1] == char_policy.tokenizer.eos_token_id for c in leaving.completion_ids]
    assert 2 <= sum(ended) < len(ended)


def test_the_draw_for_the_rows_still_in_the_batch_is_theirs_from_the_whole_batch():
    """Which rows have left the batch does not change what the others draw."""
    from rlvf.sampling.hf import _pick

    logits = torch.randn(6, 500, generator=torch.Generator().manual_seed(0)) * 3
    params = SamplingParams(temperature=0.7)
    everyone, _ = _pick(logits, params, torch.Generator().manual_seed(1), torch.arange(6), 6)
    live = torch.tensor([0, 2, 5])
    tokens, logprobs = _pick(logits[live], params, torch.Generator().manual_seed(1), live, 6)
    assert tokens.tolist() == everyone[live].tolist()
    expected = torch.log_softmax(logits / 0.7, -1)[live].gather(1, tokens[:, None]).squeeze(1)
    assert torch.allclose(logprobs, expected)


@pytest.mark.parametrize("top_p", [1.0, 0.8])
def test_the_draw_follows_the_distribution_and_never_picks_a_token_outside_it(top_p):
    """40,000 draws from one row of known probabilities (with zeros among them, and a nucleus): every frequency
    within 5 standard errors of its probability, and no token of probability 0 ever drawn."""
    from rlvf.sampling.hf import _nucleus, _pick

    probs = torch.tensor([0.0, 0.5, 0.0, 0.25, 0.15, 0.1, 0.0])
    draws = 40_000
    logits = probs.log().expand(draws, -1).contiguous()
    tokens, _ = _pick(logits, SamplingParams(temperature=1.0, top_p=top_p), torch.Generator().manual_seed(5),
                      torch.arange(draws), draws)
    expected = _nucleus(torch.log_softmax(probs.log(), -1)[None], top_p).exp()[0] if top_p < 1 else probs
    expected = expected / expected.sum()
    counts = torch.bincount(tokens, minlength=len(probs)).double()
    assert counts[expected == 0].sum() == 0
    standard_error = (expected * (1 - expected) / draws).sqrt()
    assert ((counts / draws - expected).abs() <= 5 * standard_error + 1e-12).all(), counts / draws


@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])  # flat to peaked: the nucleus from ~all tokens to a few
@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.99])
def test_the_nucleus_is_that_of_a_full_sort(scale, top_p):
    from rlvf.sampling.hf import _nucleus

    log_probs = torch.log_softmax(torch.randn(4, 20000, generator=torch.Generator().manual_seed(2)) * scale, -1)
    ranked, order = log_probs.sort(dim=-1, descending=True)
    mass_before = ranked.exp().cumsum(dim=-1) - ranked.exp()
    expected = torch.full_like(log_probs, float("-inf")).scatter(
        1, order, ranked.masked_fill(mass_before >= top_p, float("-inf")))
    assert torch.equal(_nucleus(log_probs, top_p), expected)


def test_sampling_leaves_the_models_attention_as_it_was(policy):
    ids = encode_prompts(policy.tokenizer, PROMPTS)
    before = policy.model.config._attn_implementation
    HFSampler(policy.model, policy.tokenizer).sample(ids, SamplingParams(max_new_tokens=3, n=2), seed=0)
    assert policy.model.config._attn_implementation == before
