"""`rlvf audit`: exploit completions built from task rows, scored by the real rewards of a mix through the CLI;
a reward with a planted weakness is flagged, a sound one is not, and plugins add their own families."""

from __future__ import annotations

import json
import random
import types

import pytest

from conftest import run_rlvf, write_distribution
from rlvf.api import hookimpl, with_final_answer_changed, with_sign_dropped, wrong_number
from rlvf.api.exploits import ExploitFamily
from rlvf.api.rewards import MixEntry, RewardMix, mix_from_config
from rlvf.audit.builtin import answer_forms
from rlvf.audit.run import build_completions, run_audit
from rlvf.config import RewardConfig
from rlvf.errors import PluginError
from rlvf.plugins import PluginInfo, get_registry, load_registry

DEMO = "examples/demo.toml"

# Two rewards with planted weaknesses and a family of the plugin's own.
PLANTED_PLUGIN = r'''
from rlvf.api import completion_text, hookimpl, wrong_number


def anywhere(prompts, completions, answer, **columns):
    """1.0 when the answer appears anywhere in the completion (planted weakness: hedges pass)."""
    return [1.0 if str(gold) in completion_text(c) else 0.0 for c, gold in zip(completions, answer)]


def says_correct(prompts, completions, **columns):
    """1.0 when the completion says "correct" (planted weakness: a completion vouching for itself passes)."""
    return [1.0 if "correct" in completion_text(c).lower() else 0.0 for c in completions]


def maybe_note(audit_row):
    """A wrong answer with the right one in an aside."""
    answer = audit_row.row.get("answer")
    if answer is None:
        return []
    return [f"The answer is \\boxed{{{wrong_number(answer, audit_row.rng)}}} (or maybe {answer})."]


@hookimpl
def register_rewards(register):
    register(anywhere)
    register(says_correct)


@hookimpl
def register_exploits(register):
    register("maybe_note", maybe_note)
'''

PLANTED_CONFIG = """
[task]
name = "arithmetic"
options = { max_digits = 1 }

[reward.mix]
anywhere = 1.0
says_correct = 1.0
"""


@pytest.fixture(scope="module")
def demo_audit(tmp_path_factory):
    """`rlvf audit examples/demo.toml --json`: the real math and boxed rewards (and the mix total)."""
    path = tmp_path_factory.mktemp("audit") / "demo.json"
    result = run_rlvf("audit", DEMO, "--json", str(path))
    return result, json.loads(path.read_text())


@pytest.fixture(scope="module")
def planted_audit(tmp_path_factory):
    """The planted rewards audited with `--fail-on 0`; the distribution also registers the family `maybe_note`."""
    directory = tmp_path_factory.mktemp("planted")
    site = directory / "site"
    site.mkdir()
    write_distribution(site, "rlvf-planted", "rlvf_planted", PLANTED_PLUGIN, {"planted": "rlvf_planted"})
    config = directory / "planted.toml"
    config.write_text(PLANTED_CONFIG)
    path = directory / "planted.json"
    result = run_rlvf("audit", str(config), "--fail-on", "0", "--json", str(path), env={"PYTHONPATH": str(site)},
                      check=False)
    return result, json.loads(path.read_text()), config, site


def family_table(stdout: str, title_start: str) -> dict[str, list[str]]:
    """The table printed under the reward titled `title_start...`: family -> its cells."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title_start))
    table = {}
    for line in lines[start + 3:]:
        if not line.strip() or line.startswith((" ", "warning")):
            break
        cells = line.split(None, 5)
        table[cells[0]] = cells
    return table


@pytest.mark.timeout(120)
def test_the_math_reward_pays_gold_only_and_no_exploit(demo_audit):
    result, report = demo_audit
    math = report["rewards"]["math"]
    assert math["gold_mean"] == 1.0 and math["wrong_mean"] == 0.0 and math["separates"] is True
    flagged = [name for name, family in math["families"].items() if family["flagged"]]
    assert flagged == [], flagged
    assert {"hedge", "enumeration", "echo", "format_only", "grader_directed", "self_assessment", "padding",
            "empty", "sign_dropped"} <= set(math["families"])
    assert all(family["n"] > 0 for family in math["families"].values())
    table = family_table(result.stdout, "math (weight 1, from rlvf-math)")
    assert table["gold"][1:5] == ["gold", "80", "1.0000", "+1.0000"] and table["hedge"][5] == "ok"


@pytest.mark.timeout(120)
def test_fail_on_zero_passes_for_the_math_reward(tmp_path):
    path = tmp_path / "math.json"
    result = run_rlvf("audit", DEMO, "--fail-on", "0", "--reward", "math", "--limit", "5", "--json", str(path))
    report = json.loads(path.read_text())
    assert list(report["rewards"]) == ["math"] and report["rows"] == 5  # no boxed, no mix total
    assert "no exploit family scores above wrong answers" in result.stdout


@pytest.mark.timeout(120)
def test_the_boxed_format_reward_is_flagged_for_paying_the_box(demo_audit):
    result, report = demo_audit
    boxed = report["rewards"]["boxed"]
    assert boxed["families"]["format_only"]["flagged"] and boxed["families"]["format_only"]["gain"] > 0
    assert boxed["separates"] is False and boxed["families"]["empty"]["flagged"] is False
    assert "warning: 'boxed' does not score gold above wrong answers" in result.stdout
    assert "FLAGGED: scores above wrong answers" in family_table(result.stdout, "boxed (weight 0.1")["format_only"][5]


@pytest.mark.timeout(120)
def test_json_holds_every_number(demo_audit):
    _, report = demo_audit
    assert (report["task"], report["split"], report["rows"], report["seed"]) == ("arithmetic", "eval", 20, 0)
    assert list(report["rewards"]) == ["math", "boxed", "reward"]  # the mix total: what training optimises
    assert report["families"]["hedge"] == {"role": "exploit", "plugin": "rlvf",
                                           "description": report["families"]["hedge"]["description"]}
    for reward in report["rewards"].values():
        wrong = reward["wrong_mean"]
        for name, family in reward["families"].items():
            assert set(family) == {"role", "completions", "n", "mean", "gain", "share_of_gold_gain", "flagged",
                                   "examples"}
            assert family["gain"] == pytest.approx(family["mean"] - wrong)
            assert family["flagged"] == (family["role"] == "exploit" and family["gain"] > 1e-9), name
            assert 1 <= len(family["examples"]) <= 3
            scores = [example["score"] for example in family["examples"]]
            assert scores == sorted(scores, reverse=True) and scores[0] >= family["mean"] - 1e-9  # highest first
    total = report["rewards"]["reward"]["families"]
    # the total is the weighted sum: math x1 + boxed x0.1
    for name, family in total.items():
        expected = report["rewards"]["math"]["families"][name]["mean"] + \
            0.1 * report["rewards"]["boxed"]["families"][name]["mean"]
        assert family["mean"] == pytest.approx(expected)
    flagged = {(entry["reward"], entry["family"]) for entry in report["flagged"]}
    assert ("boxed", "format_only") in flagged and not any(reward == "math" for reward, _ in flagged)
    example = report["rewards"]["math"]["families"]["gold"]["examples"][0]
    assert example["score"] == 1.0 and "\\boxed{" in example["completion"]


@pytest.mark.timeout(120)
def test_a_planted_weakness_is_flagged_and_fails_the_run(planted_audit):
    result, report, _, _ = planted_audit
    anywhere, says_correct = report["rewards"]["anywhere"]["families"], report["rewards"]["says_correct"]["families"]
    assert anywhere["hedge"]["flagged"] and anywhere["enumeration"]["flagged"]
    assert anywhere["hedge"]["mean"] == 1.0 and anywhere["gold"]["mean"] == 1.0
    assert not any(anywhere[name]["flagged"] for name in ("self_assessment", "grader_directed", "empty", "padding"))
    assert says_correct["self_assessment"]["flagged"] and says_correct["grader_directed"]["flagged"]
    assert not says_correct["hedge"]["flagged"]
    assert result.returncode == 1
    assert "--fail-on 0" in result.stderr and "reward 'anywhere' / family 'hedge'" in result.stderr
    assert "reward 'says_correct' / family 'self_assessment'" in result.stderr
    table = family_table(result.stdout, "anywhere (weight 1, from rlvf-planted)")
    assert table["hedge"][5].startswith("FLAGGED: scores above wrong answers")


@pytest.mark.timeout(120)
def test_a_plugin_family_is_audited_and_listed(planted_audit):
    result, report, _, site = planted_audit
    assert report["families"]["maybe_note"] == {"role": "exploit", "plugin": "rlvf-planted",
                                                "description": "A wrong answer with the right one in an aside."}
    note = report["rewards"]["anywhere"]["families"]["maybe_note"]
    assert note["completions"] == 20 and note["flagged"] and "(or maybe" in note["examples"][0]["completion"]
    assert "maybe_note       exploit  rlvf-planted  A wrong answer with the right one in an aside." in result.stdout
    assert "maybe_note" in family_table(result.stdout, "says_correct (weight 1")
    listing = run_rlvf("plugins", env={"PYTHONPATH": str(site)}).stdout.splitlines()
    assert any(line.startswith("rlvf-planted") and line.rstrip().endswith("maybe_note") for line in listing)


@pytest.mark.timeout(120)
def test_an_unknown_reward_lists_the_mix(planted_audit):
    _, _, config, site = planted_audit
    result = run_rlvf("audit", str(config), "--reward", "math", env={"PYTHONPATH": str(site)}, check=False)
    assert result.returncode == 2
    assert "--reward math: not a reward of the mix; the mix's rewards are: anywhere, says_correct" in result.stderr


# --- in process: the run, the families, the registry ---

def planted_mix() -> RewardMix:
    def anywhere(prompts, completions, answer, **columns):
        return [1.0 if gold in completion[0]["content"] else 0.0 for completion, gold in zip(completions, answer,
                                                                                            strict=True)]

    return RewardMix([MixEntry("anywhere", anywhere)])


def arithmetic_rows(limit: int = 6) -> list[dict]:
    return get_registry().task("arithmetic").rows("eval", limit=limit)


def audit(mix, rows, families=None, seed=0):
    families = list(get_registry().exploits.values()) if families is None else families
    return run_audit(mix, rows, families, task="arithmetic", split="eval", seed=seed,
                     titles={name: name for name in [*mix.names, "reward"]})


def test_sign_dropped_flags_a_sign_blind_checker_and_not_the_math_reward():
    """A checker comparing magnitudes (the blind spot of the RLHF example's first RM) pays `0 - 6 = 6.` for -6."""
    import re

    def sign_blind(prompts, completions, answer, **columns):
        numbers = [re.findall(r"\d+", completion[0]["content"]) for completion in completions]
        return [1.0 if found and found[-1] == gold.lstrip("-") else 0.0 for found, gold in zip(numbers, answer,
                                                                                                strict=True)]

    rows = arithmetic_rows(40)
    negative = [row for row in rows if int(row["answer"]) < 0]
    assert negative and len(negative) < len(rows)
    blind = audit(RewardMix([MixEntry("sign_blind", sign_blind)]), rows)
    dropped = next(f for f in blind.results[0].families if f.family.name == "sign_dropped")
    assert dropped.flagged and dropped.mean == 1.0
    texts = [c.text for c in build_completions([get_registry().exploits["sign_dropped"]], rows, seed=0)]
    magnitude = negative[0]["answer"].lstrip("-")
    assert f"The answer is \\boxed{{{magnitude}}}." in texts and f"{negative[0]['expression']} = {magnitude}." in texts
    assert len(texts) == 4 * len(negative)  # positive and zero answers have no sign to drop
    math = audit(mix_from_config(RewardConfig(mix={"math": 1.0}), get_registry()), rows)
    assert not next(f for f in math.results[0].families if f.family.name == "sign_dropped").flagged


def test_fail_on_margin_counts_gains_above_it():
    report = audit(planted_mix(), arithmetic_rows())
    hedge = next(f for f in report.results[0].families if f.family.name == "hedge")
    assert hedge.flagged and 0 < hedge.gain <= 1

    def flagged(margin):
        return {(reward.name, family.family.name) for reward, family in report.flagged(margin)}

    assert ("anywhere", "hedge") in flagged(0) and ("anywhere", "hedge") in flagged(hedge.gain - 1e-6)
    assert ("anywhere", "hedge") not in flagged(hedge.gain) and flagged(1.0) == set()


def test_audits_repeat_exactly_and_seeds_differ():
    rows = arithmetic_rows()
    families = list(get_registry().exploits.values())
    assert build_completions(families, rows, seed=0) == build_completions(families, rows, seed=0)
    assert build_completions(families, rows, seed=0) != build_completions(families, rows, seed=1)


def test_builtin_families_skip_rows_without_an_answer():
    builtin = [family for family in get_registry().exploits.values() if family.plugin == "rlvf"]
    assert {family.role for family in builtin} == {"gold", "wrong", "exploit"}
    assert build_completions(builtin, [{"prompt": "Write a poem.", "tests": "assert True"}], seed=0) == []


def test_gold_and_wrong_forms():
    row = {"prompt": "Calculate 7 * 8.", "question": "Calculate 7 * 8.", "answer": "56", "expression": "7 * 8"}
    assert answer_forms(row, "56") == ["The answer is \\boxed{56}.", "7 * 8 = 56. The answer is \\boxed{56}.",
                                       "The answer is 56.", "7 * 8 = 56."]
    families = get_registry().exploits
    wrong = [c.text for c in build_completions([families["wrong"]], [row], seed=0)]
    value = wrong[0].removeprefix("The answer is \\boxed{").removesuffix("}.")
    assert wrong == answer_forms(row, value) and "56" not in value and value not in "56" and int(value)
    hedges = [c.text for c in build_completions([families["hedge"]], [row], seed=0)]
    assert all("56" in text for text in hedges)


def test_a_family_that_raises_names_itself_its_plugin_and_the_row():
    def broken(audit_row):
        raise KeyError("answer")

    family = ExploitFamily("broken", broken, plugin="rlvf-broken")
    with pytest.raises(PluginError, match=r"exploit family 'broken' \(from rlvf-broken\) on row 0 raised KeyError"):
        build_completions([family], arithmetic_rows(1), seed=0)
    text_family = ExploitFamily("bare", lambda audit_row: "not a list", plugin="rlvf-bare")
    with pytest.raises(PluginError, match="returned 'not a list'; expected a list of completion texts"):
        build_completions([text_family], arithmetic_rows(1), seed=0)


def _plugin(**hooks) -> types.ModuleType:
    module = types.ModuleType("audit_test_plugin")
    for name, function in hooks.items():
        setattr(module, name, hookimpl(function))
    return module


def test_a_duplicate_family_names_both_plugins():
    registry = load_registry()
    module = _plugin(register_exploits=lambda register: register("hedge", lambda audit_row: []))
    with pytest.raises(PluginError, match=r"exploit family 'hedge' is registered twice: by plugin "
                                          r"'builtin-exploits'.*and by plugin 'dupe' \(distribution rlvf-dupe"):
        registry.add_plugin(module, PluginInfo("dupe", "rlvf-dupe", "0.1.0", "dupe = rlvf_dupe"))


def test_a_bad_role_names_the_plugin():
    registry = load_registry()
    module = _plugin(register_exploits=lambda register: register("odd", lambda audit_row: [], role="baseline"))
    with pytest.raises(PluginError, match=r"plugin 'odd' \(distribution rlvf-odd.*role 'baseline'; the roles are: "
                                          "gold, wrong, exploit"):
        registry.add_plugin(module, PluginInfo("odd", "rlvf-odd", "0.1.0", "odd = rlvf_odd"))
    module = _plugin(register_exploits=lambda register: register("lone", "not callable"))
    with pytest.raises(PluginError, match=r"plugin 'lone'.*registered exploit family 'lone' with 'not callable'"):
        registry.add_plugin(module, PluginInfo("lone", "rlvf-lone", "0.1.0", "lone = rlvf_lone"))


# --- the text helpers the families build wrong answers with ---

def test_wrong_number_is_a_different_nearby_integer():
    rng = random.Random(0)
    for answer in ["56", "-49", "0", " 7 "]:
        wrong = wrong_number(answer, rng)
        assert wrong != answer.strip() and 1 <= abs(int(wrong) - int(answer)) <= 10
    assert wrong_number("3.5", rng) is None and wrong_number("\\frac{1}{2}", rng) is None
    # the same sign and number of digits where one exists: a wrong answer's shape must not give it away
    for answer in ("0", "7", "9", "-3", "42", "-56"):
        shapes = {(int(w) < 0, len(str(abs(int(w))))) for w in (wrong_number(answer, rng) for _ in range(50))}
        assert shapes == {(int(answer) < 0, len(answer.lstrip("-")))}, answer


def test_with_sign_dropped():
    assert with_sign_dropped("0 - 6 = -6. The answer is \\boxed{-6}.", "-6") == "0 - 6 = 6. The answer is \\boxed{6}."
    assert with_sign_dropped("3 - 9 = -6, not -16.", " -6 ") == "3 - 9 = 6, not -16."  # -16 is another number
    assert with_sign_dropped("3 + 4 = 7.", "7") is None and with_sign_dropped("x", "-0.5") is None
    assert with_sign_dropped("The answer is 6.", "-6") is None  # the answer does not occur


def test_with_final_answer_changed():
    rng = random.Random(0)
    changed = with_final_answer_changed("7 * 8 = 56. The answer is \\boxed{56}.", "56", rng)
    wrong = changed.split("= ")[1].split(".")[0]
    assert wrong != "56" and changed == f"7 * 8 = {wrong}. The answer is \\boxed{{{wrong}}}."
    assert with_final_answer_changed("The answer is \\boxed{x}.", "x", rng) is None  # not an integer
    assert with_final_answer_changed("The answer is \\boxed{57}.", "56", rng) is None  # no occurrence
    assert with_final_answer_changed("It is 56.5, not 156 or -56.", "56", rng) is None  # 56 only inside numbers
    kept = with_final_answer_changed("56.5 is close to 56.", "56", rng)
    assert kept.startswith("56.5 is close to ") and not kept.endswith(" 56.")


@pytest.mark.timeout(120)
def test_the_readme_exploit_family_example_is_audited(tmp_path):
    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    source = "from rlvf.api import hookimpl, wrong_number\n" + readme.split(
        "```python\nfrom rlvf.api import hookimpl, wrong_number\n", 1)[1].split("```", 1)[0]
    site = tmp_path / "site"
    site.mkdir()
    write_distribution(site, "rlvf-footnote", "rlvf_footnote", source, {"footnote": "rlvf_footnote"})
    path = tmp_path / "audit.json"
    run_rlvf("audit", DEMO, "--reward", "math", "--limit", "5", "--json", str(path), env={"PYTHONPATH": str(site)})
    report = json.loads(path.read_text())
    assert report["families"]["footnote"]["plugin"] == "rlvf-footnote"
    footnote = report["rewards"]["math"]["families"]["footnote"]
    assert footnote["completions"] == 5 and footnote["mean"] == 0.0 and not footnote["flagged"]
    assert "[^1]: or " in footnote["examples"][0]["completion"]
