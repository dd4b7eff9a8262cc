"""LLM-as-judge: p(yes) from next-token logits (rlvf_judge.judging), the `judge` reward of rlvf-judge with its local and
server backends, rubric ratings, and `rlvf train-judge`.

The server backend is tested against real HTTP servers on 127.0.0.1: `python -m rlvf_judge.server` serving the
embedded model (whose p(yes) must equal the local backend's), and, for retries, timeouts, the concurrency limit
and rubric replies, small scripted servers started in the test (the client under test is the real one).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from conftest import BIN, HAS_DIGIT_PLUGIN, REPO, kill_when, run_rlvf, write_distribution
from rlvf.api.rewards import MixEntry, RewardMix
from rlvf.config import load_config
from rlvf.errors import ConfigError, RewardError
from rlvf_judge.config import JudgeStageConfig
from rlvf_judge.judging import (
    DEFAULT_TEMPLATE,
    answer_token_ids,
    fill_judge_template,
    judge_loss,
    roc_auc,
    yes_no_ids,
    yes_no_scores,
)
from rlvf_judge.reward import JudgeReward
from rlvf_judge.rubric import check_rubric, combine, parse_ratings, rubric_score
from rlvf_judge.train import normalize_row

PROMPTS = ["Calculate 2 + 2.", "Calculate 2 + 2.", "What is the capital of France?", "What is the capital of France?"]
COMPLETIONS = ["2 + 2 = 4. The answer is \\boxed{4}.", "2 + 2 = 5. The answer is \\boxed{5}.", "Paris.",
               "The capital of France is Berlin."]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def score(reward, prompts=PROMPTS, completions=COMPLETIONS, **columns):
    """Scores through a reward mix, as the trainer and `rlvf score` call a reward (async ones included)."""
    result = RewardMix([MixEntry("judge", reward)]).score(prompts, completions, **columns)
    return result.per_reward["judge"], result.reward_metrics.get("judge", {})


# --- the arithmetic, by hand ---

def test_yes_no_scores_by_hand():
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0, 0.5]])  # yes: ids 0 and 2; no: id 1
    s, log_mass = yes_no_scores(logits, [0, 2], [1])
    # p(yes) : p(no) = (e^2 + e^1) : e^0 = 10.107338 : 1  ->  p = 10.107338 / 11.107338 = 0.909969
    assert torch.sigmoid(s).item() == pytest.approx(0.909969, abs=1e-6)
    # p(yes) + p(no) = 11.107338 / (11.107338 + e^-1 + e^0.5) = 11.107338 / 13.123938 = 0.846341
    assert log_mass.exp().item() == pytest.approx(0.846341, abs=1e-6)


def test_judge_loss_is_the_cross_entropy_of_the_labels_answer_set():
    torch.manual_seed(0)
    logits = torch.randn(4, 10)
    labels = torch.tensor([1, 0, 1, 0])
    yes, no = [1, 7], [3]
    probabilities = logits.softmax(-1)
    answer_set = torch.where(labels.bool(), probabilities[:, yes].sum(-1), probabilities[:, no].sum(-1))
    losses, _, _ = judge_loss(logits, labels, yes, no, format_weight=1.0)
    assert losses.tolist() == pytest.approx((-answer_set.log()).tolist(), abs=1e-5)
    binary, _, _ = judge_loss(logits, labels, yes, no, format_weight=0.0)
    p_yes = probabilities[:, yes].sum(-1) / (probabilities[:, yes].sum(-1) + probabilities[:, no].sum(-1))
    expected = torch.where(labels.bool(), -p_yes.log(), -(1 - p_yes).log())
    assert binary.tolist() == pytest.approx(expected.tolist(), abs=1e-5)


def test_roc_auc_by_hand():
    # positives 0.35, 0.8 against negatives 0.1, 0.4: 0.35 beats 0.1 only, 0.8 beats both -> 3 of 4 pairs
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert roc_auc([0.5, 0.5, 0.9], [1, 0, 1]) == 0.75  # a tie counts half: (0.5 + 1) / 2
    assert roc_auc([0.2, 0.3], [1, 1]) is None


def test_yes_and_no_token_variants_of_the_embedded_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    yes, no = yes_no_ids(tokenizer)
    decoded = {tokenizer.decode([i]) for i in yes}
    assert decoded == {"yes", " yes", "Yes", " Yes"}  # "YES" is two tokens in SmolLM2's vocabulary
    assert {"no", " no", "No", " No", "NO", " NO"} == {tokenizer.decode([i]) for i in no}
    assert answer_token_ids(tokenizer, ["correct"]) and not set(answer_token_ids(tokenizer, ["correct"])) & set(yes)
    with pytest.raises(ConfigError, match="both a yes and a no"):
        yes_no_ids(tokenizer, ["yes"], ["Yes"])


def test_the_judge_reads_the_last_user_message_and_row_columns():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1 + 1?"},
            {"role": "assistant", "content": "2"}, {"role": "user", "content": "2 + 2?"}]
    text = fill_judge_template("Q: {prompt} A: {completion} ref {answer} {missing}", chat, "4 {answer}", {"answer": 4})
    assert text == "Q: 2 + 2? A: 4 {answer} ref 4 {missing}"  # braces in the response are left alone
    assert "Is this response correct? Answer yes or no." in DEFAULT_TEMPLATE
    assert normalize_row({"prompt": "p", "completion": "c", "label": "yes"}, "x") == {
        "prompt": "p", "completion": "c", "response": "c", "label": 1}
    with pytest.raises(ConfigError, match="row 3: label 'maybe'"):
        normalize_row({"prompt": "p", "response": "r", "label": "maybe"}, "row 3")


# --- rubric ratings ---

def test_rubric_replies_are_parsed_weighted_and_scaled():
    weights, scale = check_rubric({"helpfulness": 0.25, "correctness": 0.75}, [1, 5])
    assert parse_ratings("helpfulness: 4, correctness: 3", weights) == {"helpfulness": 4.0, "correctness": 3.0}
    # (4 - 1) / 4 = 0.75 and (3 - 1) / 4 = 0.5: 0.25 * 0.75 + 0.75 * 0.5 = 0.5625
    assert rubric_score("helpfulness: 4, correctness: 3", weights, scale) == pytest.approx(0.5625)
    assert rubric_score("- **Helpfulness** = 5/5\n- Overall correctness: 1", weights, scale) == pytest.approx(0.25)
    assert rubric_score("correctness: 2\nhelpfulness: 3\ncorrectness: 5", weights, scale) == pytest.approx(0.875)
    assert rubric_score("helpfulness: 4", weights, scale) is None  # an aspect missing
    assert rubric_score("helpfulness: 4, correctness: 7", weights, scale) is None  # out of the scale
    assert rubric_score("It is a good answer.", weights, scale) is None
    assert combine(None, weights, scale) is None
    with pytest.raises(ValueError, match="low < high"):
        check_rubric({"a": 1}, [5, 1])
    with pytest.raises(ValueError, match="sum to 0"):
        check_rubric({"a": 0}, [1, 5])


# --- the local backend on a real model ---

@pytest.mark.timeout(90)
def test_local_judge_on_the_embedded_model():
    from transformers import AutoModelForCausalLM

    reward = JudgeReward(cache_size=0)  # the embedded SmolLM2-135M-Instruct
    batched = reward(PROMPTS, COMPLETIONS)
    assert all(0.0 < p < 1.0 for p in batched)
    one_by_one = [reward([p], [c])[0] for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    assert batched == pytest.approx(one_by_one, abs=1e-4)  # left padding changes nothing

    # The same number from the model's full softmax, computed here without rlvf's helpers.
    tokenizer = reward.backend.tokenizer
    model = AutoModelForCausalLM.from_pretrained(reward.backend.path)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": DEFAULT_TEMPLATE.replace("{prompt}", PROMPTS[1]).replace(
            "{completion}", COMPLETIONS[1])}], add_generation_prompt=True, tokenize=False)
    with torch.no_grad():
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        probabilities = model(**inputs).logits[0, -1].softmax(-1)
    words = {"yes": ["yes", " yes", "Yes", " Yes"], "no": ["no", " no", "No", " No", "NO", " NO"]}
    mass = {k: sum(probabilities[tokenizer.convert_tokens_to_ids(tokenizer.tokenize(w))[0]].item() for w in v)
            for k, v in words.items()}
    assert batched[1] == pytest.approx(mass["yes"] / (mass["yes"] + mass["no"]), abs=1e-4)

    reward.cache_size = 100  # now with a cache
    score(reward)
    values, metrics = score(reward)
    assert values == pytest.approx(batched, abs=1e-4) and metrics["cache_hits"] == 4 and metrics["judged"] == 4


@pytest.mark.timeout(60)
def test_local_rubric_with_a_model_that_cannot_follow_it_scores_none_and_counts(tiny_model_dir):
    reward = JudgeReward(model=str(tiny_model_dir), rubric={"helpfulness": 1, "correctness": 1}, max_new_tokens=8)
    values, metrics = score(reward)
    assert values == [None] * 4 and metrics["unparsable"] == 4  # a random model writes no "aspect: score" lines
    values, metrics = score(reward)
    assert metrics["cache_hits"] == 4 and metrics["unparsable"] == 4


# --- the server backend against real servers on 127.0.0.1 ---

@pytest.fixture(scope="module")
def judge_server():
    """`python -m rlvf_judge.server` serving the embedded model on a free port (top log-probs up to 200)."""
    from rlvf.models.names import resolve_model

    path = resolve_model("smollm2-135m")
    process = subprocess.Popen([sys.executable, "-m", "rlvf_judge.server", "--model", path, "--port", "0",
                                "--max-logprobs", "200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    try:
        line = process.stdout.readline()  # the server prints where it listens once the model is loaded
        if "serving" not in line:
            raise AssertionError(f"the judge server did not start: {line}{process.stderr.read()}")
        yield line.split(" on ")[-1].strip(), path
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.timeout(120)
def test_server_backend_gives_the_local_backends_p_yes(judge_server):
    url, path = judge_server
    local = JudgeReward(model=path, cache_size=0)
    expected_chat = local(PROMPTS, COMPLETIONS)
    local.backend.chat = False  # the same model on plain text: what /v1/completions reads
    expected_plain = local(PROMPTS, COMPLETIONS)

    server_chat = JudgeReward(url=url, top_logprobs=200)
    assert server_chat.backend.model == path  # the first model the server lists
    assert score(server_chat)[0] == pytest.approx(expected_chat, abs=2e-3)
    server_plain = JudgeReward(url=url, api="completions", top_logprobs=200)
    assert score(server_plain)[0] == pytest.approx(expected_plain, abs=2e-3)
    # vLLM's default cap of 20 top log-probs: rarer spellings drop out, the score moves little
    values, metrics = score(JudgeReward(url=url))
    assert values == pytest.approx(expected_chat, abs=0.03)
    assert metrics["requests"] == 4 and metrics["retries"] == 0


@pytest.mark.timeout(120)
def test_judge_scores_through_rlvf_score_with_a_server_and_with_a_local_model(judge_server, tmp_path, tiny_model_dir):
    url, _ = judge_server
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": p, "completion": c, "id": i}
                                                 for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS, strict=True))])
    config = tmp_path / "judge.toml"
    config.write_text('[reward.mix]\n'
                      f'judge = {{ reward = "judge", options = {{ url = "{url}", top_logprobs = 200 }} }}\n')
    result = run_rlvf("score", str(config), "--input", str(rows), "--output", str(tmp_path / "server.jsonl"))
    assert "4 rows scored" in result.stderr
    server = [r["judge"] for r in read_jsonl(tmp_path / "server.jsonl")]
    assert all(0 < p < 1 for p in server)
    # the same model locally, in the CLI: the `judge` reward is found through its entry point
    result = run_rlvf("score", str(config), f'reward.mix.judge.options={{ model = "{tiny_model_dir}" }}',
                      "--input", str(rows), "--output", str(tmp_path / "local.jsonl"))
    local = read_jsonl(tmp_path / "local.jsonl")
    assert [r["id"] for r in local] == [0, 1, 2, 3] and all(0 < r["judge"] < 1 for r in local)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(60)
def test_an_unreachable_server_is_a_clear_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(RewardError) as error:
        JudgeReward(url=url, retries=2, backoff=0.05)
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert url in message and "3 attempt(s)" in message and "`url` option of the judge reward" in message
    config = tmp_path / "judge.toml"
    config.write_text(f'[reward.mix]\njudge = {{ reward = "judge", options = {{ url = "{url}", retries = 0 }} }}\n')
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "p", "completion": "c"}])
    result = run_rlvf("score", str(config), "--input", str(rows), check=False)
    assert result.returncode == 2 and "reward 'judge' (from rlvf-judge) could not be built" in result.stderr
    assert url in result.stderr and "python -m rlvf_judge.server" in result.stderr


class ScriptedServer:
    """A real HTTP server on 127.0.0.1 whose answers a test scripts: `respond(path, body) -> (status, payload,
    delay in seconds)`. It records the requests and the most requests it had in flight at once."""

    def __init__(self, respond):
        self.respond, self.requests, self.in_flight, self.max_in_flight = respond, [], 0, 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, body):
                with outer.lock:
                    outer.requests.append((self.path, body))
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    status, payload, delay = outer.respond(self.path, body)
                    time.sleep(delay)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (a timeout test)
                    pass

            def do_GET(self):
                self._answer(None)

            def do_POST(self):
                self._answer(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


MODELS = {"object": "list", "data": [{"id": "judge-model", "object": "model"}]}


def chat_answer(top: dict[str, float] | None = None, content: str = "") -> dict:
    logprobs = None
    if top is not None:
        logprobs = {"content": [{"token": next(iter(top)), "logprob": next(iter(top.values())),
                                 "top_logprobs": [{"token": t, "logprob": v} for t, v in top.items()]}]}
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": logprobs,
                         "finish_reason": "stop"}]}


@pytest.fixture
def scripted():
    servers = []

    def start(respond):
        servers.append(ScriptedServer(lambda path, body: (200, MODELS, 0) if body is None else respond(path, body)))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


@pytest.mark.timeout(30)
def test_server_errors_are_retried_with_backoff_and_top_logprobs_read(scripted):
    failures = {"left": 2}

    def respond(path, body):
        if failures["left"]:
            failures["left"] -= 1
            return 503, {"error": {"message": "busy"}}, 0
        # p(yes) = e^-1 + e^-3 (two spellings), p(no) = e^-2; "maybe" is neither
        return 200, chat_answer({"Yes": -1.0, "No": -2.0, " yes": -3.0, "maybe": -0.5}), 0

    server = scripted(respond)
    reward = JudgeReward(url=server.url, retries=3, backoff=0.05)
    start = time.monotonic()
    values, metrics = score(reward, PROMPTS[:1], COMPLETIONS[:1])
    assert time.monotonic() - start >= 0.05 + 0.1  # backoff 0.05 s, then 0.1 s
    p_yes, p_no = math.exp(-1) + math.exp(-3), math.exp(-2)
    assert values == [pytest.approx(p_yes / (p_yes + p_no))]
    assert metrics["retries"] == 2 and metrics["requests"] == 1
    path, body = server.requests[-1]
    assert path == "/v1/chat/completions" and body["model"] == "judge-model"
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 20
    assert "Is this response correct?" in body["messages"][-1]["content"]


@pytest.mark.timeout(30)
def test_a_rejected_request_fails_at_once_and_a_slow_server_times_out(scripted):
    bad = scripted(lambda path, body: (400, {"error": {"message": "top_logprobs must be <= 5"}}, 0))
    reward = JudgeReward(url=bad.url, retries=3, backoff=5.0)
    with pytest.raises(RewardError, match=r"rejected the request.*top_logprobs must be <= 5"):
        asyncio.run(reward(PROMPTS[:1], COMPLETIONS[:1]))
    assert [path for path, _ in bad.requests] == ["/v1/models", "/v1/chat/completions"]  # no retry
    slow = scripted(lambda path, body: (200, chat_answer({"Yes": -1.0}), 3.0))
    reward = JudgeReward(url=slow.url, timeout=0.3, retries=1, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(RewardError, match=r"after 2 attempt\(s\): no answer within 0.3 s \(option `timeout`\)"):
        asyncio.run(reward(PROMPTS[:1], COMPLETIONS[:1]))
    assert time.monotonic() - start < 2.5
    # the server now counts as down for a while: the next request fails at once instead of waiting again
    start = time.monotonic()
    with pytest.raises(RewardError, match="no answer within"):
        asyncio.run(reward(PROMPTS[1:2], COMPLETIONS[1:2]))
    assert time.monotonic() - start < 0.2


@pytest.mark.timeout(30)
def test_requests_in_flight_stay_within_the_concurrency_limit(scripted):
    server = scripted(lambda path, body: (200, chat_answer({"No": -0.1}), 0.1))
    prompts = [f"question {i}" for i in range(12)]
    values, metrics = score(JudgeReward(url=server.url, concurrency=3), prompts, ["answer"] * 12)
    assert values == [0.0] * 12 and metrics["requests"] == 12
    assert server.max_in_flight == 3


@pytest.mark.timeout(30)
def test_server_rubric_replies_and_missing_answers(scripted):
    def respond(path, body):
        text = body["messages"][-1]["content"]
        assert "from 1 (worst) to 5 (best): helpfulness, correctness" in text and body["max_tokens"] == 48
        reply = "helpfulness: 4\ncorrectness: 2" if "Paris" in text else "A fine answer."
        return 200, chat_answer(content=reply), 0

    server = scripted(respond)
    reward = JudgeReward(url=server.url, rubric={"helpfulness": 0.5, "correctness": 0.5})
    values, metrics = score(reward, PROMPTS[2:], COMPLETIONS[2:])
    assert values == [pytest.approx(0.5 * 0.75 + 0.5 * 0.25), None] and metrics["unparsable"] == 1
    nothing = scripted(lambda path, body: (200, chat_answer({"Maybe": -0.1, "Perhaps": -2.0}), 0))
    values, metrics = score(JudgeReward(url=nothing.url), PROMPTS[:1], COMPLETIONS[:1])
    assert values == [None] and metrics["missing_yes_no"] == 1


# --- rlvf train-judge ---


def write_prompts(path, n=200, seed=0):
    rng = random.Random(seed)
    return write_jsonl(path, [{"question": "".join(rng.choice("abcdefghij") for _ in range(6))} for _ in range(n)])


def _generated_rows_config(tmp_path, tiny_model_dir, char_model_dir, extra_judge: str = ""):
    """A train-judge config whose rows are sampled from a tiny character model on a task whose verifier
    (`has_digit`) says whether a completion holds a digit."""
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    config = tmp_path / "judge.toml"
    config.write_text(f"""
model = "{tiny_model_dir}"
[task]
name = "toy"
dataset = "{prompts}"
template = "{{question}}:"
chat = false
[reward.mix]
has_digit = 1.0
[sampling]
sampler = "hf"
[judge]
output_dir = "{tmp_path / 'judge'}"
epochs = 3
# batches of 8: the quoted default question is ~100 tokens longer than the old one, and this 2-layer judge needs
# the extra steps to find the digit in it (batches of 16 stopped at held-out AUC 0.86)
batch_size = 8
micro_batch_size = 8
lr = 1e-3
lr_schedule = "constant"
max_length = 256
progress = false
{extra_judge}
[judge.rows]
model = "{char_model_dir}"
limit = 100
n = 4
max_new_tokens = 6
""")
    return config


@pytest.mark.timeout(240)
def test_train_judge_on_rows_generated_from_a_verifiable_task_raises_held_out_auc(
        tmp_path, site, tiny_model_dir, char_model_dir):
    """The policy (a tiny character model) is sampled on a task whose verifier says whether a completion holds a
    digit; a tiny random judge learns from the verified rows to say yes to those that do."""
    from rlvf.stages.pairs import split_by_prompt

    directory, env = site
    write_distribution(directory, "toy-digit", "toy_digit", HAS_DIGIT_PLUGIN, {"toy": "toy_digit"})
    config = _generated_rows_config(tmp_path, tiny_model_dir, char_model_dir)
    output = run_rlvf("train-judge", str(config), env=env).stdout
    assert "generated rows" in output and "auc" in output
    results = json.loads((tmp_path / "judge" / "results.json").read_text())
    rows = read_jsonl(tmp_path / "judge" / "rows.jsonl")
    assert results["generated"]["prompts"] == 100 and results["generated"]["samples"] == 400
    assert len(rows) == results["generated"]["rows"] == results["train_rows"] + results["eval_rows"]
    assert all(r["label"] == int(any(ch.isdigit() for ch in r["response"])) for r in rows)
    assert 0 < results["eval_positive"] < results["eval_rows"]
    before, after = results["before"], results["after"]
    assert before["auc"] < 0.7 and after["auc"] > 0.9, (before, after)

    # The trained judge, loaded by the `judge` reward, ranks the held-out rows as train-judge measured.
    held_out = split_by_prompt(rows, "eval", 0.2, seed=0)
    reward = JudgeReward(model=str(tmp_path / "judge" / "final"))
    values = reward([r["prompt"] for r in held_out], [r["response"] for r in held_out])
    assert roc_auc(values, [r["label"] for r in held_out]) == pytest.approx(after["auc"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_train_judge_resumes_on_the_rows_it_sampled(tmp_path, site, tiny_model_dir, char_model_dir):
    """--resume trains on the saved rows.jsonl instead of sampling the policy again (minutes on a real model, and
    other rows than the checkpoint was trained on)."""
    directory, env = site
    write_distribution(directory, "toy-digit", "toy_digit", HAS_DIGIT_PLUGIN, {"toy": "toy_digit"})
    config = _generated_rows_config(tmp_path, tiny_model_dir, char_model_dir,
                                    "max_steps = 8\nsave_every = 2\nkeep_checkpoints = 0")
    run_dir = tmp_path / "judge"
    args = [str(BIN / "rlvf"), "train-judge", str(config)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    kill_when(process, lambda: any((run_dir / "checkpoints").glob("step-*")))
    assert not (run_dir / "results.json").exists(), "the run finished before it was killed"
    sampled = read_jsonl(run_dir / "rows.jsonl")
    # fewer rows than sampling gives: a resumed run that sampled again would count the full set
    kept = sampled[: len(sampled) - 7]
    write_jsonl(run_dir / "rows.jsonl", kept)

    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=240, env=env)
    assert resumed.returncode == 0, resumed.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["generated"]["rows_reused"] == 1.0
    assert results["train_rows"] + results["eval_rows"] == len(kept) == results["generated"]["rows"]
    assert read_jsonl(run_dir / "rows.jsonl") == kept


@pytest.mark.timeout(60)
def test_train_judge_reads_labelled_rows_from_a_file(tmp_path, tiny_model_dir):
    rng = random.Random(0)
    rows = []
    for i in range(40):
        good = i % 2 == 0
        rows.append({"q": f"question {i}", "a": f"answer {rng.randint(0, 9)}" if good else "no idea",
                     "ok": "true" if good else "false"})
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    config = tmp_path / "judge.toml"
    config.write_text(f"""
model = "{tiny_model_dir}"
[judge]
dataset = "{data}"
columns = {{ prompt = "q", response = "a", label = "ok" }}
output_dir = "{tmp_path / 'run'}"
max_steps = 3
batch_size = 8
progress = false
""")
    run_rlvf("train-judge", str(config))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["steps"] == 3 and results["train_rows"] + results["eval_rows"] == 40
    assert {"auc", "accuracy", "loss", "yes_no_mass"} <= set(results["after"])
    assert (tmp_path / "run" / "final" / "config.json").is_file()
    rows[5]["ok"] = "maybe"
    write_jsonl(data, rows)
    result = run_rlvf("train-judge", str(config), f"judge.output_dir={json.dumps(str(tmp_path / 'run2'))}",
                      check=False)
    assert result.returncode == 2 and "row 5: label 'maybe' is not 0/1" in result.stderr


def test_the_rlaif_examples_are_valid_configs():
    judge = load_config(REPO / "examples" / "rlaif" / "train_judge.toml", schema=JudgeStageConfig)
    # several samples per prompt (right and wrong rows of one question), from the split GRPO does not evaluate on
    assert judge.judge.dataset is None and judge.judge.rows.n >= 2 and judge.judge.rows.split == "train"
    grpo = load_config(REPO / "examples" / "rlaif" / "grpo_judge.toml")
    assert grpo.reward.mix["judge"].options["model"] == judge.judge.output_dir + "/final"
