"""The rlvf-text plugin's rewards, loaded through the registry as users get them."""

from __future__ import annotations

import pytest

from rlvf.plugins import get_registry


def reward(name, **options):
    return get_registry().reward(name).build(**options)


def test_boxed_needs_a_non_empty_box_nested_braces_ok():
    completions = ["x = \\boxed{\\frac{1}{2}}", "\\boxed{}", "no box", "\\boxed{3", [{"role": "assistant",
                                                                                   "content": "\\fbox{7}"}]]
    assert reward("boxed")(prompts=[""] * 5, completions=completions) == [1.0, 0.0, 0.0, 0.0, 1.0]


def test_think_format():
    completions = ["<think>2+2 is 4</think> The answer is 4.", "<think></think>4", "The answer is 4",
                   "<think>a</think><think>b</think>4", "<think>reasoning</think>"]
    assert reward("think_format")(prompts=[""] * 5, completions=completions) == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_code_fence_needs_a_closed_python_block_with_code():
    completions = ["Here:\n```python\ndef f(x):\n    return x\n```\nDone.", "```py\nprint(1)\n```",
                   "```python\ndef f(x):\n    return x", "```python\n\n```", "```\nprint(1)\n```",
                   "def f(x):\n    return x", "```python\n```\n```python\nx = 1\n```",
                   [{"role": "assistant", "content": "```Python\nx = 1\n```"}]]
    scores = reward("code_fence")(prompts=[""] * 8, completions=completions)
    assert scores == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]


def test_overlong_penalty_uses_token_ids_when_given():
    penalty = reward("overlong", max_length=10, buffer=4)
    ids = [[0] * n for n in (6, 8, 10, 12)]
    assert penalty(prompts=[""] * 4, completions=[""] * 4, completion_ids=ids) == [0.0, -0.5, -1.0, -1.0]
    assert penalty(prompts=[""], completions=["one two three four five six seven"]) == [-0.25]
    with pytest.raises(Exception, match="buffer"):
        reward("overlong", max_length=4, buffer=8)


def test_repetition_penalty():
    penalty = reward("repetition", ngram=2)
    scores = penalty(prompts=[""] * 3, completions=["a b c d", "a b a b a b", "a"])
    assert scores == [0.0, pytest.approx(-(1 - 2 / 5)), 0.0]


def test_qa_exact_and_f1_against_one_or_several_answers():
    completions = ["The answer is The Eiffel Tower!", "\\boxed{Paris, France}", "I think it is Lyon"]
    answers = ["eiffel tower", ["Paris", "Paris, France"], "Paris"]
    assert reward("qa_exact")(prompts=[""] * 3, completions=completions, answer=answers) == [1.0, 1.0, 0.0]
    f1 = reward("qa")(prompts=[""], completions=["answer: big red tower"], answer=["red tower"])
    assert f1 == [pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))]


def test_qa_rewards_pay_nothing_for_boxes_holding_different_answers():
    # exploits: a hedge over two boxes (the last box used to decide), and the right answer in a box before a wrong one
    hedges = ["The answer is \\boxed{Lyon} or \\boxed{Paris}.", "\\boxed{Paris}, \\boxed{Lyon}",
              "\\boxed{Lyon} \\fbox{Paris}"]
    # correct: the same answer boxed twice, and one box after words
    correct = ["\\boxed{Paris} so \\boxed{paris}.", "It is \\boxed{Paris}."]
    for name in ("qa_exact", "qa"):
        scores = reward(name)(prompts=[""] * 5, completions=hedges + correct, answer=["Paris"] * 5)
        assert scores == [0.0, 0.0, 0.0, 1.0, 1.0], name


def test_qa_without_answer_column_names_it():
    with pytest.raises(KeyError, match="'answer' column"):
        reward("qa")(prompts=[""], completions=["x"])
