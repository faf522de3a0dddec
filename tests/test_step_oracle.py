"""The exact step oracle of the synthetic task (rlzoo.data.synthetic.step_oracle), worked by hand."""

from __future__ import annotations

import pytest

from rlzoo.data.synthetic import SyntheticConfig, SyntheticTask
from rlzoo.data.synthetic import step_oracle as oracle
from rlzoo.interface import Example
from rlzoo.reward_models.steps import first_error, split_steps


def step_oracle(example, completion, rule="line"):
    """The oracle's verdicts on the steps ``rule`` splits ``completion`` into."""
    return oracle(example, split_steps(completion, rule))


# "Ann has 8 apples. Ann gives away 6 apples. The number of apples grows 3 times."
# 8 - 6 = 2, then 2 * 3 = 6: the answer is 6
EX = Example("Q", "6", meta={"format": "cot", "ops": 2, "start": 8, "steps": [("-", 6, 2), ("*", 3, 6)]})
ANSWER = "The answer is \\boxed{%s}."


def lines(*steps: str) -> str:
    return " " + "\n".join(steps)


@pytest.mark.parametrize(
    "completion, labels",
    [
        # the gold solution: every step on the path
        (lines("8 - 6 = 2.", "2 * 3 = 6.", ANSWER % 6), [True, True, True]),
        # wrong arithmetic in step 1 (8 - 6 is 2, not 3): wrong from there on, though 3 * 3 = 9 is
        # itself right arithmetic and the answer follows from it
        (lines("8 - 6 = 3.", "3 * 3 = 9.", ANSWER % 9), [False, False, False]),
        # wrong arithmetic in step 2 (2 * 3 is 6, not 5)
        (lines("8 - 6 = 2.", "2 * 3 = 5.", ANSWER % 5), [True, False, False]),
        # right arithmetic, wrong operand: the problem's second operation is * 3, not * 4
        (lines("8 - 6 = 2.", "2 * 4 = 8.", ANSWER % 8), [True, False, False]),
        # an operation skipped: the answer step comes before * 3 was applied
        (lines("8 - 6 = 2.", ANSWER % 2), [True, False]),
        # the first operation skipped: 8 * 3 is not the next operation (- 6 is)
        (lines("8 * 3 = 24.", "24 - 6 = 18.", ANSWER % 18), [False, False, False]),
        # every operation right, wrong final answer (6 was computed, 7 is stated)
        (lines("8 - 6 = 2.", "2 * 3 = 6.", ANSWER % 7), [True, True, False]),
        # the right answer stated before the last operation: not every operation was done
        (lines("8 - 6 = 2.", ANSWER % 6), [True, False]),
        # a step that is no equation and no answer is wrong, and so is all that follows it
        (lines("Let me think.", "8 - 6 = 2.", "2 * 3 = 6.", ANSWER % 6), [False, False, False, False]),
        # nothing after the answer is correct, even the answer again
        (lines("8 - 6 = 2.", "2 * 3 = 6.", ANSWER % 6, ANSWER % 6), [True, True, True, False]),
        # spacing and the final period are free; blank lines are no steps
        (" 8-6=2\n\n2 *3 =  6.\nThe answer is \\boxed{ 6 }", [True, True, True]),
        ("", []),
    ],
)
def test_step_labels_by_hand(completion, labels):
    assert step_oracle(EX, completion) == labels
    assert first_error(labels) == (labels.index(False) if False in labels else None)


def test_first_error_of_the_oracle():
    assert first_error(step_oracle(EX, lines("8 - 6 = 2.", "2 * 3 = 5.", ANSWER % 5))) == 1
    assert first_error(step_oracle(EX, lines("8 - 6 = 2.", "2 * 3 = 6.", ANSWER % 6))) is None


def test_rules_sentence_agrees_and_paragraph_has_no_equation_steps():
    gold = lines("8 - 6 = 2.", "2 * 3 = 6.", ANSWER % 6)
    assert step_oracle(EX, gold, "sentence") == [True, True, True]
    # one sentence per step on one line too: the solution as the task wrote it before issue 13
    assert step_oracle(EX, gold.replace("\n", " "), "sentence") == [True, True, True]
    assert step_oracle(EX, gold, "paragraph") == [False]  # one step holding three equations


def test_every_gold_solution_of_the_task_is_right_at_every_step_and_a_slip_is_caught():
    task = SyntheticTask(SyntheticConfig(eval_size=100))
    for ex in task.eval_examples():
        assert step_oracle(ex, ex.solution) == [True] * (ex.meta["ops"] + 1)
        # change the result of the last operation: that step and the answer are wrong
        steps = ex.solution.split("\n")
        last = steps[-2].rsplit("= ", 1)
        steps[-2] = f"{last[0]}= {int(last[1].rstrip('.')) + 1}."
        assert step_oracle(ex, "\n".join(steps)) == [True] * (ex.meta["ops"] - 1) + [False, False]


def test_an_example_without_the_problem_is_refused():
    with pytest.raises(ValueError, match=r"needs a synthetic example \(meta\['start'\] and meta\['steps'\]\)"):
        oracle(Example("Q", "1", meta={"source": "gsm8k"}), ["1 + 0 = 1."])


def test_doctests():
    import doctest

    import rlzoo.data.synthetic

    result = doctest.testmod(rlzoo.data.synthetic)
    assert result.failed == 0 and result.attempted > 0
