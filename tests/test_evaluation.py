"""Pass@k's unbiased estimator and majority voting, by hand."""

from math import comb

import pytest

from rlzoo.evaluation import majority_correct, pass_at_k


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
    assert majority_correct(["5", "5", "7"], [True, True, False])
    assert not majority_correct(["7", "5", "7"], [False, True, False])
    assert not majority_correct([None, None], [False, False])
    # empty answers do not vote: the single "5" wins
    assert majority_correct([None, "5", None], [False, True, False])
    # a tie goes to the answer seen first
    assert not majority_correct(["3", "5"], [False, True])
