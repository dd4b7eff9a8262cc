"""plugins/rlvf-env: the python_tool and feedback environments, with the real sandbox, the real `math` reward, the
installed plugin and a tiny real model.

A real sampler cannot be told what to write, so the episodes of a model are run with the tiny model of conftest
trained (here, in seconds) to write given episodes: a real model, greedy, whose text is known in advance."""

from __future__ import annotations

import os
import socket

import pytest
import torch
from rlvf_env import final_code_block
from rlvf_env.feedback import MESSAGE

from conftest import plugins_json
from rlvf.api import EnvironmentContext, Observation, mix_from_config
from rlvf.api.tasks import task_from_config
from rlvf.config import RewardConfig, TaskConfig
from rlvf.plugins import load_registry
from rlvf.sampling import SamplingParams, model_sampler
from rlvf.sampling.base import finish_samples
from rlvf.sampling.episodes import episode_stats, observation_ids, run_episodes
from rlvf.stages.evaluate import score_samples


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture(scope="module")
def tool(registry):
    environment = registry.environment("python_tool").configured(timeout=2.0, max_output_chars=200, workers=2)
    yield environment
    environment.close()


def run_block(environment, code: str, *, episode=None) -> tuple[str, dict]:
    """The observation and state after a model turn that ends in `code` as a python block."""
    episode = episode or environment.start({}, EnvironmentContext())
    observation = episode.step(f"Let me compute.\n```python\n{code}\n```\n", False)
    assert observation is not None and observation.role == "inline"
    return observation.text, episode.state


def math_reward(registry):
    return registry.rewards["math"].build()


# ---- discovery and protocol ----

def test_the_installed_plugin_provides_both_environments():
    plugins = {p["distribution"]: p for p in plugins_json()}
    assert plugins["rlvf-env"]["environments"] == ["python_tool", "feedback"]
    assert plugins["rlvf-env"]["entry_point"] == "env = rlvf_env.plugin"


def test_a_turn_ends_at_the_closing_fence_and_only_a_closed_python_block_runs(tiny_model_dir, tool):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    params = SamplingParams(stop=tool.stop, max_new_tokens=64)

    def sampled(text):  # what a sampler returns for a model that wrote `text`
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return finish_samples(tokenizer, {tokenizer.eos_token_id}, [ids], [[0.0] * len(ids)], params).texts[0]

    # the opening fence does not end the turn; the closing one does, and the model's made-up output is cut off
    assert sampled("```python\nprint(6 * 7)") == "```python\nprint(6 * 7)"
    assert sampled("```python\nprint(6 * 7)\n```\n```output\n41\n```\nSo") == "```python\nprint(6 * 7)\n```\n"
    assert final_code_block("```python\nprint(6 * 7)\n```\n") == "print(6 * 7)\n"
    assert final_code_block("Then:\n```py\nx = 2\nprint(x)\n```") == "x = 2\nprint(x)\n"  # closed at the very end
    assert final_code_block("```python\nprint(1)\n```\nThen ```python\nprint(2)\n```\n") == "print(2)\n"
    for no_code in ["The answer is \\boxed{42}.", "```python\nprint(1)\n```\nso it is 1.", "```\nprint(1)\n```\n",
                    "```python\nprint(1)", "```python\n\n```\n", "```python\nprint(1)\n```output\n1\n```\n"]:
        assert final_code_block(no_code) is None, no_code
        assert tool.start({}, EnvironmentContext()).step(no_code, True) is None


def test_output_comes_back_as_an_output_block(tool):
    text, state = run_block(tool, "print(37 * 84)")
    assert text == "```output\n3108\n```\n"
    assert state == {"tool_calls": 1, "tool_errors": 0, "tool_timeouts": 0}
    episode = tool.start({}, EnvironmentContext())
    assert episode.step("```python\nprint(1)\n```", True).text == "\n```output\n1\n```\n"  # on a line of its own


def test_an_error_returns_the_output_so_far_and_the_tracebacks_last_line(tool):
    text, state = run_block(tool, "print('before')\ndef f():\n    return 1 / 0\nf()")
    assert text == "```output\nbefore\nZeroDivisionError: division by zero\n```\n"
    assert state["tool_errors"] == 1 and state["tool_timeouts"] == 0
    text, _ = run_block(tool, "x = (")
    assert "SyntaxError" in text and "Traceback" not in text


# ---- containment: the code runs only in the sandbox ----

def test_code_cannot_write_to_the_host_see_its_processes_or_its_environment(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("RLVF_ENV_TEST_SECRET", "host-secret-7361")
    environment = registry.environment("python_tool").configured(timeout=5.0)  # its sandbox starts after setenv
    try:
        marker = tmp_path / "marker"
        text, _ = run_block(environment, f"open({str(marker)!r}, 'w').write('escaped')\nprint('wrote it')")
        assert not marker.exists() and "wrote it" not in text and "Error" in text
        run_block(environment, f"import os, subprocess\nos.system('touch {marker}')\n"
                               f"subprocess.run(['/bin/sh', '-c', 'echo x > {marker}'])")
        assert not marker.exists()
        host_pid = os.getpid()
        text, _ = run_block(environment, "import os\nprint('pid', os.getpid(), os.getppid())\n"
                                         "print(dict(os.environ))\n"
                                         f"print(open('/proc/{host_pid}/environ').read())")
        assert "host-secret-7361" not in text and "RLVF_ENV_TEST_SECRET" not in text
        assert "FileNotFoundError" in text  # the host's processes are not in the sandbox's /proc
        pid = int(text.split("pid ")[1].split()[0])
        assert pid != host_pid and pid < 100  # its own PID namespace
    finally:
        environment.close()


def test_code_cannot_reach_the_network(tool):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        text, state = run_block(tool, "import socket\n"
                                      f"socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n"
                                      "print('connected')")
        assert "connected" not in text and state["tool_errors"] == 1
        with pytest.raises(TimeoutError):  # nothing connected while the code ran (it has finished)
            server.accept()


# ---- limits ----

def test_a_block_that_runs_too_long_is_stopped_and_counted(tool):
    text, state = run_block(tool, "print('started', flush=True)\nwhile True:\n    pass")
    assert "TimeoutError: the code ran longer than 2 s" in text and "started" in text
    assert state == {"tool_calls": 1, "tool_errors": 1, "tool_timeouts": 1}


def test_output_is_cut_at_max_output_chars(tool):
    text, state = run_block(tool, "print('7' * 50_000)")
    assert text.count("7") == 200 and "more characters" in text and len(text) < 300
    assert state["tool_errors"] == 0
    text, state = run_block(tool, "import sys\nwhile True:\n    sys.stdout.write('8' * 4096)")  # endless output
    assert text.count("8") == 200 and "output cut" in text and state["tool_timeouts"] == 0


def test_a_block_over_the_memory_limit_is_stopped(registry):
    environment = registry.environment("python_tool").configured(memory="64M", timeout=5.0, workers=1)
    try:
        text, state = run_block(environment, "x = bytearray(300 * 1024 * 1024)\nprint('allocated')")
        assert "allocated" not in text and ("MemoryError" in text) and state["tool_errors"] == 1
    finally:
        environment.close()


def test_bad_options_name_the_environment_and_the_option(registry):
    from rlvf.api import ConfigError

    for options, what in [({"timeout": 0}, "timeout"), ({"memory": "lots"}, "memory"),
                          ({"persistent": "yes"}, "persistent"), ({"max_output_chars": 0}, "max_output_chars"),
                          ({"max_turns": 0}, "max_turns"), ({"time_limit": 1}, "time_limit")]:
        with pytest.raises(ConfigError, match=what) as error:
            registry.environment("python_tool").configured(**options)
        assert "python_tool" in str(error.value)


# ---- state: clean by default, persistent on request ----

def test_each_block_starts_clean_unless_persistent(tool, registry):
    episode = tool.start({}, EnvironmentContext())
    run_block(tool, "x = 6", episode=episode)
    text, _ = run_block(tool, "print(x * 7)", episode=episode)
    assert "NameError" in text
    persistent = registry.environment("python_tool").configured(persistent=True, timeout=2.0, workers=1)
    try:
        episode = persistent.start({}, EnvironmentContext())
        assert run_block(persistent, "x = 6\nprint('first')", episode=episode)[0] == "```output\nfirst\n```\n"
        assert run_block(persistent, "while True:\n    pass", episode=episode)[0].count("TimeoutError") == 1
        assert run_block(persistent, "y = x * 7\nprint(y)\n1 / 0", episode=episode)[0] == \
            "```output\n42\nZeroDivisionError: division by zero\n```\n"  # the earlier block's output is not repeated
        text, state = run_block(persistent, "print(x + y)", episode=episode)  # the timed-out block is not replayed
        assert text == "```output\n48\n```\n"
        assert state == {"tool_calls": 4, "tool_errors": 2, "tool_timeouts": 1}
        other = persistent.start({}, EnvironmentContext())  # another episode does not see this one's names
        assert "NameError" in run_block(persistent, "print(x)", episode=other)[0]
    finally:
        persistent.close()


# ---- rewards read only the model's text ----

def test_math_scores_the_models_answer_not_the_tools_output(tool, registry):
    """Code that prints the right answer in a box does not make a wrong (or missing) final answer score."""
    math = math_reward(registry)
    turn = "```python\nprint('\\\\boxed{' + str(6 * 7) + '}')\n```\n"
    observation = tool.start({}, EnvironmentContext()).step(turn, False)
    assert observation.text == "```output\n\\boxed{42}\n```\n"

    def episode(*final):
        return [{"role": "assistant", "content": turn}, {"role": "tool", "content": observation.text},
                *({"role": "assistant", "content": text} for text in final)]
    assert math(["q"] * 4, [episode("The answer is \\boxed{41}."), episode(), episode("So it is 41."),
                            episode("The answer is \\boxed{42}.")], answer=["42"] * 4) == [0.0, 0.0, 0.0, 1.0]


# ---- feedback ----

def arithmetic_rows(registry, environment: str, limit: int = 8):
    task = task_from_config(TaskConfig(name="arithmetic", environment=environment), registry)
    return task, task.rows("eval", limit=limit)


def accuracy_context(registry):
    math = math_reward(registry)
    return EnvironmentContext(lambda row, text: math([row["prompt"]], [text], answer=[row["answer"]])[0])


def test_feedback_says_only_that_an_answer_is_wrong(registry):
    _, rows = arithmetic_rows(registry, "feedback")
    environment = registry.environment("feedback").configured()
    context = accuracy_context(registry)
    said = set()
    for row in rows:
        episode = environment.start(row, context)
        wrong = episode.step(f"The answer is \\boxed{{{int(row['answer']) + 1}}}.", True)
        assert isinstance(wrong, Observation) and wrong.role == "user"
        said.add(wrong.text)
        assert episode.step(f"The answer is \\boxed{{{row['answer']}}}.", True) is None
        assert episode.state == {"attempts": 2, "solved": True}
    assert said == {MESSAGE}  # the same sentence for every row: nothing derived from the answer
    assert not any(ch.isdigit() for ch in MESSAGE)
    unsolved = environment.start(rows[0], context)
    assert unsolved.step("I do not know.", True).text == MESSAGE and unsolved.state == {"attempts": 1,
                                                                                          "solved": False}


# ---- episodes of a real model ----

def model_writing(tiny_model_dir, episodes: list[list[int]], prompt_lengths: list[int]):
    """The tiny model trained until it writes each episode greedily: teacher-forced argmax right on every
    completion token of every episode (then greedy decoding follows them), with some margin."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    width = max(map(len, episodes))
    ids = torch.tensor([e + [2] * (width - len(e)) for e in episodes])
    attention = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in episodes])
    labels = ids.clone()
    for row, (episode, start) in enumerate(zip(episodes, prompt_lengths, strict=True)):
        labels[row, :start] = -100
        labels[row, len(episode):] = -100
    positions = labels[:, 1:] != -100  # the logits that predict a completion token
    targets = ids[:, 1:][positions]
    model.train()
    for _ in range(400):
        hidden = model.model(input_ids=ids, attention_mask=attention).last_hidden_state[:, :-1][positions]
        logits = model.lm_head(hidden)  # only where a completion token is predicted: the vocabulary is large
        loss = torch.nn.functional.cross_entropy(logits, targets)
        if bool((logits.argmax(-1) == targets).all()) and loss.item() < 0.05:  # of these weights: stop before a step
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(input_ids=ids, attention_mask=attention).logits.argmax(-1)
    assert bool((predicted[:, :-1][positions] == targets).all()), "the tiny model did not learn the episodes"
    return model


def episode_ids(tokenizer, turns: list[str], observations: list[Observation], *, chat: bool = True) -> list[int]:
    """The tokens of an episode as run_episodes lays them out: model turns, and the observations between them."""
    ids: list[int] = []
    for index, turn in enumerate(turns):
        ids += tokenizer(turn, add_special_tokens=False)["input_ids"]
        if index < len(observations):
            ended = observations[index].role != "inline"
            if ended:
                ids.append(tokenizer.eos_token_id)  # the model ends its answer before a user's reply
            ids += observation_ids(tokenizer, observations[index], chat=chat, model_ended=ended,
                                   eos_ids={tokenizer.eos_token_id})
    return [*ids, tokenizer.eos_token_id]


def test_tool_episodes_of_a_real_model(tiny_model_dir, registry):
    """run_episodes with the HF sampler: a model that calls the tool, reads its output and answers; the output
    is inline, inserted (generated 0, log-prob 0), counted; `math` scores the honest episode 1 and the one whose
    code prints the right answer in a box while the model answers wrong 0 (through rlvf eval's own path)."""
    from transformers import AutoTokenizer

    from rlvf.models.loading import encode_prompts

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    task = task_from_config(TaskConfig(name="arithmetic", environment="python_tool",
                                       environment_options={"max_turns": 3, "max_tokens": 96, "workers": 2}), registry)
    environment = task.environment
    rows = [{"expression": "6 * 7", "answer": "42"}, {"expression": "5 * 9", "answer": "45"}]
    for row in rows:
        row["prompt"] = task.format_prompt(row)
    assert "```python" in row["prompt"][2]["content"]  # the worked tool call replaces the task's example
    turns = [["```python\nprint(6 * 7)\n```\n", "The answer is \\boxed{42}."],
             ["```python\nprint('\\\\boxed{' + str(5 * 9) + '}')\n```\n", "The answer is \\boxed{44}."]]
    observations = [environment.start(row, EnvironmentContext()).step(turn[0], False)
                    for row, turn in zip(rows, turns, strict=True)]
    assert [o.text for o in observations] == ["```output\n42\n```\n", "```output\n\\boxed{45}\n```\n"]
    prompt_ids = encode_prompts(tokenizer, [row["prompt"] for row in rows])
    completions = [episode_ids(tokenizer, t, [o]) for t, o in zip(turns, observations, strict=True)]
    model = model_writing(tiny_model_dir, [p + c for p, c in zip(prompt_ids, completions, strict=True)],
                          list(map(len, prompt_ids)))
    sampler = model_sampler(model, tokenizer, batch_size=4, registry=registry)

    samples = run_episodes(sampler, tokenizer, environment, rows, prompt_ids,
                           SamplingParams(temperature=0.0, max_new_tokens=40), seed=0)
    for index, (turn, observation) in enumerate(zip(turns, observations, strict=True)):
        assert samples.messages[index] == [{"role": "assistant", "content": turn[0]},
                                           {"role": "tool", "content": observation.text},
                                           {"role": "assistant", "content": turn[1]}]
        assert samples.states[index] == {"tool_calls": 1, "tool_errors": 0, "tool_timeouts": 0}
        flags, ids = samples.generated[index], samples.completion_ids[index]
        inserted = [token for token, flag in zip(ids, flags, strict=True) if flag == 0]
        assert tokenizer.decode(inserted) == observation.text  # exactly the observation's tokens were inserted
        assert all(lp == 0.0 for lp, flag in zip(samples.logprobs[index], flags, strict=True) if flag == 0)
        assert all(lp < 0.0 for lp, flag in zip(samples.logprobs[index], flags, strict=True) if flag == 1)
        assert ids == completions[index]
    stats = episode_stats([samples])
    assert stats["env/tool_calls"] == 1.0 and stats["episode/turns"] == 2.0 and stats["env/tool_errors"] == 0.0

    # scored as rlvf eval and rlvf train score episodes: the messages, with the row's columns
    _, result = score_samples(mix_from_config(RewardConfig(mix={"math": 1.0}), registry), rows, samples)
    assert result.per_reward["math"] == [1.0, 0.0]


def test_feedback_episodes_of_a_real_model(tiny_model_dir, registry):
    """A model that answers wrong, is told so (a user message through the chat template), and answers right: the
    environment judged both turns with the real math reward and the episode ends solved."""
    from transformers import AutoTokenizer

    from rlvf.models.loading import encode_prompts

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    task = task_from_config(TaskConfig(name="arithmetic", environment="feedback",
                                       environment_options={"max_turns": 3, "max_tokens": 96}), registry)
    rows = [{"expression": "6 * 7", "answer": "42"}]
    rows[0]["prompt"] = task.format_prompt(rows[0])
    turns = ["The answer is \\boxed{41}.", "The answer is \\boxed{42}."]
    prompt_ids = encode_prompts(tokenizer, [rows[0]["prompt"]])
    completion = episode_ids(tokenizer, turns, [Observation(MESSAGE, role="user")])
    model = model_writing(tiny_model_dir, [prompt_ids[0] + completion], [len(prompt_ids[0])])
    sampler = model_sampler(model, tokenizer, batch_size=4, registry=registry)
    samples = run_episodes(sampler, tokenizer, task.environment, rows, prompt_ids,
                           SamplingParams(temperature=0.0, max_new_tokens=24), seed=0,
                           context=accuracy_context(registry))
    assert samples.messages[0] == [{"role": "assistant", "content": turns[0]}, {"role": "user", "content": MESSAGE},
                                   {"role": "assistant", "content": turns[1]}]
    assert samples.states[0] == {"attempts": 2, "solved": True}
    inserted = [t for t, flag in zip(samples.completion_ids[0], samples.generated[0], strict=True) if flag == 0]
    assert MESSAGE in tokenizer.decode(inserted) and "42" not in tokenizer.decode(inserted)


def test_math_scores_a_retry_that_got_it_right(registry):
    math = math_reward(registry)
    episode = [{"role": "assistant", "content": "The answer is \\boxed{41}."}, {"role": "user", "content": MESSAGE},
               {"role": "assistant", "content": "The answer is \\boxed{42}."}]
    assert math(["q"], [episode], answer=["42"]) == [1.0]  # the final turn's answer (rlvf.api.final_turn_text)
    assert math(["q"], [episode[:2]], answer=["42"]) == [0.0]  # a feedback message never answers for the model
    assert math(["q"], [[*episode[:2], {"role": "assistant", "content": "Yes."}]], answer=["41"]) == [0.0]


# ---- the scaffold ----

@pytest.mark.slow
@pytest.mark.timeout(600)
def test_new_plugin_environment_installs_and_is_discovered(tmp_path):
    """`rlvf new-plugin NAME --environment`: the package builds and installs (into a directory of its own, not the
    shared venv), `rlvf plugins --json` lists its environment, and its own tests pass."""
    import subprocess
    import sys

    from conftest import BIN, run_rlvf

    run_rlvf("new-plugin", "calc_tool", "--environment", "--directory", str(tmp_path))
    package, site = tmp_path / "rlvf-calc-tool", tmp_path / "site"
    assert "register_environments" in (package / "rlvf_calc_tool" / "plugin.py").read_text()
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(package)], check=True, timeout=300)
    env = {"PYTHONPATH": str(site)}
    plugin = {p["distribution"]: p for p in plugins_json(env)}["rlvf-calc-tool"]
    assert plugin["environments"] == ["calc_tool"] and plugin["rewards"] == []
    assert "rlvf-calc-tool" not in {p["distribution"] for p in plugins_json()}  # nothing leaked into the venv
    own_tests = subprocess.run([str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", str(package / "tests")],
                               capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert own_tests.returncode == 0, own_tests.stdout + own_tests.stderr
    assert "3 passed" in own_tests.stdout


def test_new_plugin_without_environment_still_writes_a_reward(tmp_path):
    from rlvf.tools.scaffold import write_plugin

    reward = (write_plugin("short", tmp_path) / "rlvf_short" / "plugin.py").read_text()
    environment = (write_plugin("calc", tmp_path / "e", environment=True) / "rlvf_calc" / "plugin.py").read_text()
    assert "register_rewards" in reward and "register_environments" not in reward
    assert "class CalcEnvironment(Environment)" in environment and "{{" not in environment
