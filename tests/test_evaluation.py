"""Pass@k's unbiased estimator and majority voting, by hand."""

from math import comb

import pytest

from rlzoo.run.evaluation import answer_groups, maj_at_k, majority_correct, pass_at_k


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (10, 0, 1, 0.0),
        (10, 10, 5, 1.0),
        (10, 3, 1, 0.3),  # pass@1 = c / n
        (10, 3, 2, 1 - comb(7, 2) / comb(10, 2)),  # 1 - 21/45
        (5, 1, 5, 1.0),  # every sample drawn: one correct is enough
        (8, 2, 7, 1.0),  # n - c = 6 < k = 7
        (4, 2, 3, 1.0),
    ],
)
def test_pass_at_k(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_rejects_k_above_n():
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_majority_vote():
    assert majority_correct([0, 0, 1], [True, True, False])
    assert not majority_correct([1, 0, 1], [False, True, False])
    assert not majority_correct([None, None], [False, False])
    # empty answers do not vote: the single group 0 wins
    assert majority_correct([None, 0, None], [False, True, False])
    # a tie goes to the group seen first
    assert not majority_correct([1, 0], [False, True])


def test_answers_vote_by_equivalence_not_by_string():
    # 0.5, \frac12 and 1/2 are one answer; 2 and 2.0 another; "x" and None are their own
    assert answer_groups(["0.5", "\\frac{1}{2}", "2", "1/2", None, "2.0", "x"]) == [0, 0, 1, 0, None, 1, 2]
    # three spellings of 1/2 (3 votes) beat two identical "3"s; a string vote would pick "3"
    groups = answer_groups(["\\frac12", "3", "0.5", "3", "1/2"])
    assert majority_correct(groups, [True, False, True, False, True])
    assert maj_at_k(groups, [True, False, True, False, True], 5) == 1.0


def test_maj_at_k_votes_on_what_the_reward_grades_and_greedy_events_are_reported(monkeypatch):
    # programs print the answer; the numbers in their text disagree with it, so a vote on the
    # text's last number would pick 3 (wrong) where a vote on the program output picks 5 (right)
    import rlzoo.run.evaluation as evaluation
    from rlzoo.interface import Example
    from rlzoo.rewards import make_reward

    def prog(expr: str) -> str:
        return f"\n```python\nx = {expr}\nprint(x)\n```"

    ex = Example("Q", "5")
    greedy = [prog("2 + 3")]
    samples = [prog("2 + 3"), prog("1 + 4"), " 1 + 2 = 3. The answer is \\boxed{3}.", prog("6 - 3")]

    class Batch:
        def __init__(self, completions):
            self.completions, self.examples = completions, [ex] * len(completions)

    monkeypatch.setattr(evaluation, "sample", lambda model, tok, exs, n, cfg, **kw: Batch(greedy if n == 1 else samples))
    out = evaluation.evaluate(None, None, [ex], make_reward("any_format"), samples=4, ks=[1, 4])
    assert out["accuracy"] == 1.0
    assert out["pass@1"] == pytest.approx(0.5) and out["pass@4"] == 1.0
    assert out["maj@4"] == 1.0  # the outputs 5, 5, 3, 3: tie, the first seen (5) wins
    assert out["maj@1"] == pytest.approx(0.5)
    assert out["format_pot_frac"] == 1.0 and out["format_cot_frac"] == 0.0
    samples[:] = [prog("1 + 2"), prog("2 + 3"), prog("6 - 3"), " 2 + 3 = 5. The answer is \\boxed{5}."]
    assert evaluation.evaluate(None, None, [ex], make_reward("any_format"), samples=4, ks=[4])["maj@4"] == 0.0  # 3, 5, 3, 5: 3 first


def test_shown_metrics_leaves_out_every_sets_problem_count():
    """A problem count is not a metric: the main set's and each extra set's are left out of tables
    (the summary table once showed ``shifted/num_examples`` as 10000.0, a count read as a share)."""
    from rlzoo.run.evaluation import shown_metrics

    evals = [{"accuracy": 0.5, "num_examples": 200, "shifted/accuracy": 0.25, "shifted/num_examples": 100,
              "format_tir_frac": 0.0, "shifted/format_cot_frac": 1.0}]
    assert shown_metrics(evals) == ["accuracy", "shifted/accuracy", "shifted/format_cot_frac"]
