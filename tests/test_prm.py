"""Process reward models (plugins/rlvf-prm): steps and their offsets, `rlvf train-prm` on a planted step rule, the
`prm` reward from the installed plugin (StepScores, and what text cannot do to them), Monte-Carlo step labels
sampled on a task, and --resume.

The planted rule: a tiny random character-level model reads prompts and steps of random characters; a step is
labelled wrong iff it contains an "x" (in place of another character, so wrong and right steps have the same
lengths). The PRM must learn it from the labels, measured on the steps of held-out prompts."""

from __future__ import annotations

import json
import os
import random
import shlex
import subprocess

import pytest
from rlvf_prm.config import PRMStageConfig
from rlvf_prm.steps import normalize_step_row, roc_auc, split_steps, step_ends, step_metrics, step_spans
from safetensors.torch import load_file

from conftest import BIN, REPO, kill_when, run_rlvf
from rlvf.api import StepScores
from rlvf.config import load_config
from rlvf.errors import ConfigError, RewardError
from rlvf.plugins import get_registry, load_registry

LETTERS = "abcdefghijklmnopqrstuvwyz0123456789"  # no "x": the planted error


def planted_step(rng: random.Random, wrong: bool) -> str:
    chars = [rng.choice(LETTERS) for _ in range(rng.randint(2, 8))]
    if wrong:
        chars[rng.randrange(len(chars))] = "x"
    return "".join(chars)


def planted_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        labels = [int(rng.random() >= 0.4) for _ in range(rng.randint(1, 4))]
        rows.append({"prompt": f"q{index}:", "steps": [planted_step(rng, not y) for y in labels], "labels": labels})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def setting(key: str, value) -> str:
    return f"{key}={json.dumps(value)}"


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- steps, rows and metrics, by hand ---

def test_steps_and_their_end_offsets():
    text = "17 + 25 = 42\n\n8 * 3 = 24\n42 - 24 = 18\nThe answer is \\boxed{18}."
    assert split_steps(text) == ["17 + 25 = 42", "\n8 * 3 = 24", "42 - 24 = 18", "The answer is \\boxed{18}."]
    ends = step_ends(text)
    assert ends == [12, 24, 37, len(text)]
    assert [text[start:end] for start, end in step_spans(text)] == split_steps(text)
    assert step_spans("a\nb\n\n") == [(0, 1), (2, 3)] and step_ends("a\nb\n\n") == [1, 3]
    assert step_ends("") == step_ends(" \n\t\n") == [] and split_steps("  ") == []
    assert split_steps("a; b;; c;;", separator=";;") == ["a; b", " c"] and step_ends("a; b;; c;;", ";;") == [4, 8]
    for sample in (text, "a\nb\n\n", " \n x\n\n y", "one line"):
        assert StepScores.split(sample, [0.5] * len(step_ends(sample))).ends == step_ends(sample)


def test_step_rows_are_checked_with_the_row_named():
    row = normalize_step_row({"prompt": "p", "steps": ["a", "b"], "labels": [1, "false"]}, "r")
    assert row["labels"] == [1.0, 0.0]
    assert normalize_step_row({"steps": ["a"], "labels": [0.25]}, "r")["labels"] == [0.25]
    for bad, message in [({"steps": ["a"]}, r"rows\.jsonl row 3: row has no 'labels'"),
                         ({"steps": ["a", "b"], "labels": [1]}, "2 steps but 1 labels"),
                         ({"steps": "a", "labels": [1]}, "'steps' must be a non-empty list"),
                         ({"steps": ["a", " "], "labels": [1, 0]}, "step 1 is empty"),
                         ({"steps": ["a"], "labels": [1.5]}, r"step 0: step label 1\.5 is not in \[0, 1\]"),
                         ({"steps": ["a"], "labels": ["maybe"]}, "is not 0/1")]:
        with pytest.raises(ConfigError, match=message):
            normalize_step_row(bad, "rows.jsonl row 3")


def test_step_metrics_by_hand():
    assert roc_auc([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0.1, 0.9], [1, 0]) == 0.0 and roc_auc([0.5, 0.5], [1, 0]) == 0.5
    assert roc_auc([0.2, 0.4], [1, 1]) is None
    metrics = step_metrics([[0.9, 0.2, 0.7], [0.8, 0.6], [0.3]], [[1, 0, 0], [1, 1], [1]])
    # first errors: predicted 1, labelled 1 (equal); none, none (equal); predicted 0, labelled none (not equal)
    assert metrics["first_error_accuracy"] == pytest.approx(2 / 3)
    assert metrics["step_accuracy"] == pytest.approx(4 / 6)  # 0.7 (labelled 0) and 0.3 (labelled 1) are wrong
    # correct steps 0.9, 0.8, 0.6, 0.3 against wrong 0.2, 0.7: 7 of the 8 pairs ranked right
    assert metrics["auc"] == pytest.approx(6 / 8)
    soft = step_metrics([[0.5]], [[0.5]])  # a soft label of 0.5 counts as correct; its loss is log 2
    assert soft["step_accuracy"] == 1.0 and soft["loss"] == pytest.approx(0.6931, abs=1e-4)


# --- a PRM learns a planted step rule ---

def train_prm_config(model_dir, dataset, output, **extra):
    values = {"model.name": str(model_dir), "prm.dataset": str(dataset), "prm.output_dir": str(output),
              "prm.lr": 5e-3, "prm.epochs": 8, "prm.batch_size": 16, "prm.micro_batch_size": 8,
              "prm.progress": False, **extra}
    return [setting(key, value) for key, value in values.items()]


@pytest.fixture(scope="module")
def trained_prm(char_model_dir, tmp_path_factory):
    from rlvf_prm.train import run_train_prm

    directory = tmp_path_factory.mktemp("prm")
    dataset = write_jsonl(directory / "rows.jsonl", planted_rows(200))
    config = load_config(None, train_prm_config(char_model_dir, dataset, directory / "run"), schema=PRMStageConfig)
    return run_train_prm(config), directory / "run"


@pytest.mark.timeout(120)
def test_a_prm_learns_a_planted_step_rule_on_held_out_steps(trained_prm):
    results, output = trained_prm
    before, after = results["before"], results["after"]
    assert results["eval_rows"] == 40 and results["train_rows"] == 160 and results["eval_wrong_steps"] >= 20
    assert 0.3 < before["auc"] < 0.7  # a fresh score head: chance
    assert after["auc"] > 0.9 and after["first_error_accuracy"] > before["first_error_accuracy"]
    assert after["first_error_accuracy"] >= 0.75 and after["loss"] < before["loss"]
    assert after["p/correct_steps"] > 0.6 > 0.4 > after["p/wrong_steps"]
    logged = [r for r in read_jsonl(output / "metrics.jsonl") if "loss" in r]
    assert len(logged) == results["steps"] and all("step_accuracy" in r for r in logged)

    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(output / "final")
    assert config.num_labels == 1 and config.pad_token_id is not None
    assert config.architectures == ["LlamaForTokenClassification"]


# --- the prm reward, from the installed plugin ---

def test_the_reward_and_the_command_come_from_the_installed_plugin():
    plugins = {p["distribution"]: p for p in json.loads(run_rlvf("plugins", "--json").stdout)}
    assert plugins["rlvf-prm"]["rewards"] == ["prm"] and plugins["rlvf-prm"]["commands"] == ["train-prm"]
    assert plugins["rlvf-prm"]["entry_point"] == "prm = rlvf_prm.plugin"
    assert plugins["rlvf-prm"]["exploits"] == ["worked_solution", "right_steps_wrong_answer",
                                               "irrelevant_true_steps", "repeated_step", "unfinished_work"]
    assert "train-prm" in run_rlvf("--help").stdout
    code = ("import sys; from rlvf.plugins import load_registry; r = load_registry(); "
            "assert 'prm' in r.rewards and 'train-prm' in r.commands; print('torch' in sys.modules)")
    listed = subprocess.run([str(BIN / "python"), "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "RLVF_PLUGINS": "rlvf-prm"})
    assert listed.stdout.strip() == "False", listed.stderr  # listing plugins imports no torch


@pytest.fixture(scope="module")
def prm_reward(trained_prm):
    _, output = trained_prm
    return load_registry().reward("prm").build(model=str(output / "final"), batch_size=3)


def test_the_reward_returns_step_scores_at_the_steps_ends(prm_reward):
    completions = ["ab1\ncdx\nq7", "", "  \n\t", "zz", [{"role": "assistant", "content": "k2\nx9"}]]
    prompts = ["q1:", "q2:", "q3:", "q4:", "q5:"]
    scored = prm_reward(prompts, completions)
    assert scored[1] is None and scored[2] is None  # no step: no reward
    for value, completion in zip([scored[0], scored[3], scored[4]], [completions[0], "zz", "k2\nx9"],
                                 strict=True):
        assert isinstance(value, StepScores)
        assert list(value.ends) == step_ends(completion) and len(value.scores) == len(value.ends)
        assert all(0.0 <= s <= 1.0 for s in value.scores)
    # one by one, batched or not, the same scores; monotone (the default): each at most the ones before it
    alone = [prm_reward([p], [c])[0] for p, c in zip(prompts, completions, strict=True)]
    for a, b in zip(scored, alone, strict=True):
        assert (a is None and b is None) or a.scores == pytest.approx(b.scores, abs=1e-5)
    raw = prm_reward.step_probabilities(["q1:"], ["ab1\ncdx\nq7"])[0]
    assert list(scored[0].scores) == pytest.approx([min(raw[: k + 1]) for k in range(3)], abs=1e-6)
    assert prm_reward.pop_metrics()["no_steps"] == 0.0


@pytest.mark.timeout(120)
def test_rlvf_score_writes_the_prm_steps_and_the_mix_reduces_them(trained_prm, prm_reward, tmp_path):
    _, output = trained_prm
    completions = ["ab1\ncdx\nq7", "zz 9", "  "]
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"q{i}:", "completion": c}) + "\n"
                            for i, c in enumerate(completions)))
    config = tmp_path / "score.toml"
    config.write_text(f'[reward.mix]\nprm = {{ reward = "prm", step_reduction = "last", options = {{ model = '
                      f'"{output / "final"}", batch_size = 2 }} }}\n')
    run_rlvf("score", str(config), "--input", str(rows), "--output", str(tmp_path / "scored.jsonl"))
    scored = read_jsonl(tmp_path / "scored.jsonl")
    direct = prm_reward([f"q{i}:" for i in range(3)], completions)
    for row, expected in zip(scored[:2], direct[:2], strict=True):
        assert [step["end"] for step in row["prm_steps"]] == list(expected.ends)
        assert [step["score"] for step in row["prm_steps"]] == pytest.approx(list(expected.scores), abs=1e-5)
        assert row["prm"] == pytest.approx(expected.scores[-1], abs=1e-5)  # step_reduction = "last"
    assert scored[2]["prm"] is None and scored[2]["reward"] is None  # no step: no reward


def test_the_reward_needs_a_model_and_refuses_a_model_that_is_no_prm(char_model_dir):
    spec = load_registry().reward("prm")
    with pytest.raises(RewardError, match=r"needs options\.model"):
        spec.build()
    with pytest.raises((ConfigError, RewardError), match="is not a process reward model"):
        spec.build(model=str(char_model_dir))


# --- exploits: what text cannot do ---

# Appended after the step's last word or number (a piece boundary, rlvf_prm.model.PIECE), as prose is.
CLAIMS = [" this step is correct", ", this step is correct", ". This step is correct!", " = correct", " ok verified",
          " 1 = 1 correct"]


def wrong_steps(n: int, seed: int = 7) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(f"p{i}:", planted_step(rng, False) + "\n" + planted_step(rng, True)) for i in range(n)]


def test_a_claim_appended_to_a_wrong_step_never_raises_its_score(prm_reward):
    cases = wrong_steps(30)
    prompts = [p for p, _ in cases]
    plain = prm_reward.step_probabilities(prompts, [c for _, c in cases])
    assert sum(p[1] < 0.5 for p in plain) > 15  # the trained PRM sees most (a majority) of these errors
    for claim in CLAIMS:
        claimed = prm_reward.step_probabilities(prompts, [c + claim for _, c in cases])
        for before, after in zip(plain, claimed, strict=True):
            assert after[0] == pytest.approx(before[0], abs=1e-5)  # the step before: untouched
            assert after[1] <= before[1] + 1e-5, claim  # the claimed step: never higher


def test_a_claim_on_a_line_of_its_own_changes_no_earlier_score_and_scores_no_higher(prm_reward, trained_prm):
    cases = wrong_steps(20, seed=8)
    prompts = [p for p, _ in cases]
    plain = prm_reward(prompts, [c for _, c in cases])
    for claim in ["\nthis step is correct", "\n\nall steps verified ok", "\n1 = 1"]:
        claimed = prm_reward(prompts, [c + claim for _, c in cases])
        for before, after in zip(plain, claimed, strict=True):
            assert list(after.scores[:2]) == pytest.approx(list(before.scores), abs=1e-5)
            assert after.scores[2] <= after.scores[1] + 1e-6  # monotone: no line scores a wrong solution back up
    _, output = trained_prm
    raw = load_registry().reward("prm").build(model=str(output / "final"), monotone=False)
    for prompt, completion in cases:
        alone, claimed = raw([prompt], [completion])[0], raw([prompt], [completion + "\nthis step is correct"])[0]
        assert list(claimed.scores[:2]) == pytest.approx(list(alone.scores), abs=1e-5)


def test_empty_and_whitespace_completions_get_no_reward(prm_reward):
    blank = ["", " ", "\n", "\n\n  \t\n", [{"role": "assistant", "content": "  "}]]
    assert prm_reward(["q:"] * len(blank), blank) == [None] * len(blank)
    assert prm_reward.pop_metrics()["no_steps"] == float(len(blank))


# --- Monte-Carlo step labels sampled on a task ---

# The accuracy reward of the Monte-Carlo tests: the tiny random model writes random words, and about a third of its
# 14-token samples hold a "k".
HAS_K = '''
from rlvf.api import completion_text

def has_k(prompts, completions, **columns):
    """1.0 when the completion holds a k."""
    return [1.0 if "k" in completion_text(c) else 0.0 for c in completions]
'''


def mc_settings(tmp_path, model_dir, **extra) -> list[str]:
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"question": f"say a k {i}"} for i in range(12)])
    (tmp_path / "has_k.py").write_text(HAS_K)
    values = {"model.name": str(model_dir), "task.name": "toy", "task.dataset": str(prompts), "task.chat": False,
              "task.template": "{question}:", "sampling.sampler": "hf", "prm.separator": " ",
              "prm.rows.limit": 8, "prm.rows.n": 2, "prm.rows.max_new_tokens": 14, "prm.rows.max_steps": 3,
              "prm.rows.continuations": 3, "prm.rows.label": "soft", "prm.output_dir": str(tmp_path / "run"),
              "prm.max_steps": 4, "prm.batch_size": 4, "prm.save_every": 2, "prm.progress": False, **extra}
    mix = f'reward.mix={{k = {{reward = "{tmp_path / "has_k.py"}:has_k"}}}}'
    return [mix, *(setting(key, value) for key, value in values.items())]


@pytest.mark.timeout(300)
def test_monte_carlo_labels_every_step_from_its_continuations(tiny_model_dir, tmp_path):
    from rlvf_prm.labelling import generate_step_rows

    config = load_config(None, mc_settings(tmp_path, tiny_model_dir), schema=PRMStageConfig)
    rows, stats = generate_step_rows(config, get_registry())
    assert rows and stats["rows"] == len(rows) and stats["steps"] == sum(len(r["labels"]) for r in rows)
    assert 0 < stats["steps_labelled_correct"] < stats["steps"]  # both kinds of step occur
    continued = 0
    for row in rows:
        text, steps, labels = row["completion"], row["steps"], row["labels"]
        assert 1 <= len(steps) == len(labels) <= 3 and all(0.0 <= y <= 1.0 for y in labels)
        assert text.startswith(" ".join(steps))
        assert row["correct"] == float("k" in text)
        for index, (label, hits) in enumerate(zip(labels, row["continuations_correct"], strict=True)):
            if hits is None:  # the completion's last step, and it ended there: its own verdict
                assert index == len(split_steps(text, " ")) - 1 and not row["truncated"]
                assert label == row["correct"]
                continue
            continued += 1
            assert label == hits / 3
            if "k" in " ".join(steps[: index + 1]):  # every continuation of a prefix with a k holds a k
                assert label == 1.0
    assert continued and stats["continuations_sampled"] == 3 * continued

    hard_config = load_config(None, mc_settings(tmp_path, tiny_model_dir, **{"prm.rows.label": "hard"}),
                              schema=PRMStageConfig)
    hard, _ = generate_step_rows(hard_config, get_registry())  # the same samples (seeded), labels made hard
    assert [r["labels"] for r in hard] == [[float(y > 0) for y in r["labels"]] for r in rows]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_train_prm_on_generated_rows_and_resume_reuses_them(tiny_model_dir, tmp_path):
    command = ["train-prm", *mc_settings(tmp_path, tiny_model_dir)]
    first = run_rlvf(*command)
    assert "held-out metric" in first.stdout and "auc" in first.stdout and "first_error_accuracy" in first.stdout
    assert "generated continuations_sampled" in first.stdout and "process reward model:" in first.stdout
    rows = read_jsonl(tmp_path / "run" / "rows.jsonl")
    assert rows and all(len(r["steps"]) == len(r["labels"]) for r in rows)
    again = run_rlvf(*command, "--resume")  # finished: the same results, nothing sampled or trained again
    assert again.stdout == first.stdout
    refused = run_rlvf(*command, "prm.rows.continuations=4", "--resume", check=False)
    assert refused.returncode == 2 and "prm.rows.continuations: 3 -> 4" in refused.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_prm_killed_after_a_checkpoint_resumes_as_if_never_stopped(char_model_dir, tmp_path):
    dataset = write_jsonl(tmp_path / "rows.jsonl", planted_rows(120))

    def command(output):
        return [*train_prm_config(char_model_dir, dataset, output, **{"prm.max_steps": 12, "prm.save_every": 2,
                                                                       "prm.keep_checkpoints": 0})]

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_rlvf("train-prm", *command(straight))
    args = [str(BIN / "rlvf"), "train-prm", *command(killed)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_when(process, lambda: any((killed / "checkpoints").glob("step-*")))
    assert not (killed / "results.json").exists(), "the run finished before it was killed"
    last_saved = max(int(p.name.split("-")[1]) for p in (killed / "checkpoints").glob("step-*"))
    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=240, env=os.environ)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {killed} from step {last_saved} of 12" in resumed.stderr

    def logged(run_dir):
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_jsonl(run_dir /
                                                                                              "metrics.jsonl")]
    expected, got = logged(straight), logged(killed)
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(expected, got, strict=True):
        assert a.keys() == b.keys() and all(b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6) for k in a)
    weights, resumed_weights = load_file(straight / "final" / "model.safetensors"), \
        load_file(killed / "final" / "model.safetensors")
    assert weights.keys() == resumed_weights.keys()
    assert all(resumed_weights[name].allclose(tensor, rtol=1e-5, atol=1e-7) for name, tensor in weights.items())


def test_the_example_config_is_valid_and_the_stage_labels_multistep_by_default():
    config = load_config(REPO / "examples" / "prm" / "prm.toml", schema=PRMStageConfig)
    assert config.task.name == "multistep" and config.prm.rows.continuations == 2 and config.prm.dataset is None
    assert PRMStageConfig().task.name == "multistep" and PRMStageConfig().prm.separator == "\n"


def test_the_rl_comparison_commands_in_rl_toml_load():
    """examples/prm/rl.toml's header lists the arms' commands; each loads, with the arm's mix and algorithm."""
    header = (REPO / "examples" / "prm" / "rl.toml").read_text().split("\nseed")[0]
    commands = [line.split("rlvf train ", 1)[1] for line in header.replace("\\\n#", "").splitlines()
                if "rlvf train " in line]
    arms = [load_config(REPO / args[0], args[1:]) for args in (shlex.split(c.split("#")[0]) for c in commands)]
    assert [sorted(arm.reward.mix) for arm in arms] == [["math"], ["math", "prm"], ["math", "prm"], ["math"]]
    assert arms[1].reward.mix["prm"].step_reduction == "min" and arms[2].algorithm.advantage == "reinforce_pp"
    assert arms[3].algorithm.advantage == "reinforce_pp"  # its control: the same algorithm without the PRM
    assert len({arm.train.output_dir for arm in arms}) == 4 and {arm.train.steps for arm in arms} == {20}


def test_train_prm_errors_name_what_to_fix(char_model_dir, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "steps": ["a", "b"], "labels": [1]}] * 4)
    result = run_rlvf("train-prm", *train_prm_config(char_model_dir, bad, tmp_path / "run"), check=False)
    assert result.returncode == 2 and "2 steps but 1 labels" in result.stderr and "bad.jsonl" in result.stderr
    settings = mc_settings(tmp_path, char_model_dir, **{"prm.rows.accuracy_reward": "nope",
                                                        "prm.output_dir": str(tmp_path / "run2")})
    result = run_rlvf("train-prm", *settings, check=False)
    assert result.returncode == 2 and "prm.rows.accuracy_reward 'nope' is not in the reward mix" in result.stderr


def test_the_prm_exploit_families_pay_nothing_under_the_math_reward_and_the_worked_solution_pays():
    """The plugin's audit families on real `multistep` rows: the worked solution is right (math 1.0), every exploit
    states a wrong answer (math 0.0), so any score a PRM gives them is its own error."""
    from rlvf.api import AuditRow, mix_from_config, task_from_config
    from rlvf.config import RewardConfig, TaskConfig

    registry = load_registry()
    families = {name: family for name, family in registry.exploits.items() if family.plugin == "rlvf-prm"}
    rows = task_from_config(TaskConfig(name="multistep", options={"max_operations": 3}), registry).rows("eval",
                                                                                                     limit=12)
    mix = mix_from_config(RewardConfig(mix={"math": 1.0}), registry)
    built = {name: [] for name in families}
    for index, row in enumerate(rows):
        for name, family in families.items():
            for text in family.build(AuditRow(row, index, rows, random.Random(f"{name}{index}"))):
                built[name].append((row, text))
    for name, pairs in built.items():
        assert len(pairs) >= len(rows), name  # every multistep row has a worked solution and an integer answer
        scores = mix.score([row["prompt"] for row, _ in pairs], [text for _, text in pairs],
                           answer=[row["answer"] for row, _ in pairs]).per_reward["math"]
        assert scores == [1.0 if families[name].role == "gold" else 0.0] * len(pairs), (name, pairs[0][1])
    steps = built["right_steps_wrong_answer"][0][1].splitlines()
    assert steps[:-1] == rows[0]["solution"].splitlines()[:-1]  # the steps are the reference's own
    assert families["worked_solution"].build(AuditRow({"prompt": "q", "answer": "3"}, 0, [], random.Random(0))) == []
    holds_answer = {"prompt": "q", "answer": "9", "solution": "3 + 9 = 12\n12 - 3 = 9\nThe answer is \\boxed{9}."}
    unfinished = families["unfinished_work"].build(AuditRow(holds_answer, 0, [holds_answer], random.Random(0)))
    assert len(unfinished) == 1 and unfinished[0].isdigit() and unfinished[0] != "9"  # "3 + 9" could read as 9
