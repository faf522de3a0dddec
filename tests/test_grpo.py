"""GRPO: coefficient form vs autograd of the native objective; hand-worked advantages."""

import math

import pytest
import torch

from rlzoo.algorithms.grpo import GRPO, group_advantages, process_advantages
from rlzoo.errors import ConfigError
from rlzoo.interface import RolloutBatch
from rlzoo.losses import aggregate, surrogate_loss


def make_batch(n=8, t=6, groups=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, t, generator=g) > 0.25).float()
    mask[:, 0] = 0  # position 0 never trains
    mask[:, 1] = 1
    return RolloutBatch(
        input_ids=torch.zeros(n, t, dtype=torch.long),
        attention_mask=torch.ones(n, t, dtype=torch.long),
        loss_mask=mask,
        group_ids=torch.arange(groups).repeat_interleave(n // groups),
        rewards=torch.randint(0, 2, (n,), generator=g).float(),
        old_logprobs=-torch.rand(n, t, generator=g) * 2,
        ref_logprobs=-torch.rand(n, t, generator=g) * 2,
    )


def with_steps(batch, seed=0):
    """``batch`` with random reasoning steps and PRM step rewards: each trained token ends a step
    with probability 1/3, and each row's last trained token always does."""
    g = torch.Generator().manual_seed(seed)
    trained = batch.loss_mask > 0
    ends = trained & (torch.rand(batch.loss_mask.shape, generator=g) < 1 / 3)  # [N, T]
    last = (trained.long().cumsum(-1) == trained.sum(-1, keepdim=True)) & trained  # [N, T] last trained token
    batch.step_ends = (ends | last).float()
    batch.step_rewards = torch.rand(batch.loss_mask.shape, generator=g) * batch.step_ends
    return batch


def native_grpo_objective(logp, batch, adv, beta, eps_low, eps_high):
    """The paper's Eq. 3 per token (to maximise): min(rho A, clip(rho) A) - beta * k3."""
    ratio = torch.exp(logp - batch.old_logprobs)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
    log_r = batch.ref_logprobs - logp
    k3 = torch.exp(log_r) - log_r - 1
    return surrogate - beta * k3


@pytest.mark.parametrize("supervision", ["outcome", "process"])
@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "token-mean"])
@pytest.mark.parametrize("beta", [0.0, 0.04, 0.5])
def test_coefficient_gradient_equals_native_gradient(mode, beta, supervision):
    batch = with_steps(make_batch())
    algo = GRPO(GRPO.Config(beta=beta, clip_eps=0.2, supervision=supervision))
    batch, _ = algo.prepare(batch, runtime=None)
    if supervision == "process":  # advantages that change along a row: the per-token A is exercised
        assert (batch.advantages * batch.loss_mask).diff(dim=-1).abs().sum() > 1
    # current log-probs away from old ones: ratios far from 1, several tokens clipped
    logp0 = batch.old_logprobs + torch.randn(batch.old_logprobs.shape, generator=torch.Generator().manual_seed(1)) * 0.5
    ratio = torch.exp(logp0 - batch.old_logprobs)
    clipped_tokens = ((ratio < 0.8) | (ratio > 1.2)) & (batch.loss_mask > 0)
    assert clipped_tokens.sum() >= 5, "the test must exercise the clip"

    logp = logp0.clone().requires_grad_(True)
    coef, metrics = algo.coefficients(batch, logp.detach())
    surrogate_loss(coef, logp, batch.loss_mask, mode).backward()
    grad_coef = logp.grad.clone()

    logp = logp0.clone().requires_grad_(True)
    objective = native_grpo_objective(logp, batch, batch.advantages, beta, 0.2, 0.2)
    (-aggregate(objective, batch.loss_mask, mode)).backward()
    torch.testing.assert_close(grad_coef, logp.grad, rtol=1e-5, atol=1e-7)
    assert 0 < metrics["policy/clip_frac"] < 1


def test_clip_higher_matches_native():
    batch = make_batch(seed=3)
    algo = GRPO(GRPO.Config(beta=0.04, clip_eps=0.2, clip_eps_high=0.28))
    batch, _ = algo.prepare(batch, None)
    logp0 = batch.old_logprobs + 0.4 * torch.randn(batch.old_logprobs.shape, generator=torch.Generator().manual_seed(2))
    logp = logp0.clone().requires_grad_(True)
    coef, _ = algo.coefficients(batch, logp.detach())
    surrogate_loss(coef, logp, batch.loss_mask, "seq-mean-token-mean").backward()
    g1 = logp.grad.clone()
    logp = logp0.clone().requires_grad_(True)
    (-aggregate(native_grpo_objective(logp, batch, batch.advantages, 0.04, 0.2, 0.28), batch.loss_mask)).backward()
    torch.testing.assert_close(g1, logp.grad, rtol=1e-5, atol=1e-7)


def test_on_policy_coefficient_is_the_papers_formula():
    # mu = 1: pi_old = pi_theta, ratio 1, GC = A + beta * (pi_ref / pi_theta - 1)
    batch = make_batch()
    algo = GRPO(GRPO.Config(beta=0.04))
    batch, _ = algo.prepare(batch, None)
    batch.old_logprobs = batch.old_logprobs.clone()
    coef, _ = algo.coefficients(batch, batch.old_logprobs)
    expected = batch.advantages + 0.04 * (torch.exp(batch.ref_logprobs - batch.old_logprobs) - 1)
    torch.testing.assert_close(coef, expected)


def test_group_advantages_by_hand():
    # group 0: rewards 1, 0, 0, 1 -> mean 0.5, unbiased std sqrt(1/3); group 1 constant -> 0
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    adv, degenerate = group_advantages(rewards, groups, eps=0.0)
    s = math.sqrt(1 / 3)
    torch.testing.assert_close(adv, torch.tensor([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0, 0, 0, 0]))
    assert degenerate.tolist() == [False] * 4 + [True] * 4


def test_unscaled_advantages_are_centred_rewards():
    adv, _ = group_advantages(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([5, 5, 5]), scale=False)
    torch.testing.assert_close(adv, torch.tensor([1.0, -1.0, 0.0]))


def test_constant_groups_give_no_policy_gradient_and_are_counted():
    batch = make_batch()
    batch.rewards = torch.tensor([1.0, 1, 1, 1, 0, 1, 0, 0])
    algo = GRPO(GRPO.Config(beta=0.0))
    batch, metrics = algo.prepare(batch, None)
    assert metrics["grpo/zero_adv_group_frac"] == 0.5
    coef, _ = algo.coefficients(batch, batch.old_logprobs)
    assert torch.all(coef[:4] == 0) and torch.any(coef[4:] != 0)


def rows_batch(rewards, group_ids, t=4):
    """A batch of len(rewards) rows of t tokens, tokens 1.. trained, with the given rewards and groups."""
    n = len(rewards)
    mask = torch.ones(n, t)
    mask[:, 0] = 0
    return RolloutBatch(input_ids=torch.zeros(n, t, dtype=torch.long), attention_mask=torch.ones(n, t, dtype=torch.long),
                        loss_mask=mask, group_ids=torch.tensor(group_ids), rewards=torch.tensor(rewards),
                        old_logprobs=torch.full((n, t), -1.0), ref_logprobs=torch.full((n, t), -1.0))


@pytest.mark.parametrize("eps", [0.0, 1e-4])
def test_constant_groups_of_non_binary_rewards_get_exactly_zero(eps):
    # group 3: seven rewards of 0.1. On paper mean 0.1, std 0, A = 0; in float32 the mean is off by
    # one ulp, the std is ~8e-9, and (r - mean) / std would be -0.93 for all seven (one sign: a
    # spurious push), or ~-7e-5 with eps 1e-4. They must be exactly 0 and the group counted.
    # group 8: 0.2, 0.5, 0.5, 0.8: mean 0.5, deviations -0.3, 0, 0, 0.3, unbiased var
    # (0.09 + 0.09) / 3 = 0.06, so A = -0.3 / (sqrt(0.06) + eps), 0, 0, +0.3 / (sqrt(0.06) + eps)
    # (= -+1.2247 with eps 0).
    rewards = [0.1] * 7 + [0.2, 0.5, 0.5, 0.8]
    groups = [3] * 7 + [8] * 4
    adv, degenerate = group_advantages(torch.tensor(rewards), torch.tensor(groups), eps=eps)
    a = 0.3 / (math.sqrt(0.06) + eps)
    torch.testing.assert_close(adv, torch.tensor([0.0] * 7 + [-a, 0.0, 0.0, a]))
    assert torch.all(adv[:7] == 0)  # exactly, not about
    assert degenerate.tolist() == [True] * 7 + [False] * 4
    batch, metrics = GRPO(GRPO.Config(beta=0.0, std_eps=eps)).prepare(rows_batch(rewards, groups), None)
    assert metrics["grpo/zero_adv_group_frac"] == 0.5  # one group of two
    assert torch.all(batch.advantages[:7] == 0)
    coef, _ = GRPO(GRPO.Config(beta=0.0, std_eps=eps)).coefficients(batch, batch.old_logprobs)
    assert torch.all(coef[:7] == 0) and torch.all(coef[[7, 10], 1:] != 0)


@pytest.mark.parametrize("eps", [0.0, 1e-4])
def test_process_groups_of_equal_non_binary_step_rewards_get_exactly_zero(eps):
    # Group 1: 3 outputs x 3 steps (ending at tokens 1, 2, 3), all nine step rewards 0.7. In float32
    # their std is ~6e-8 and each normalised step reward ~+0.94, so the first token of each output
    # (three steps at or after it) would get ~+2.8. It must be exactly 0 everywhere.
    # Group 2: 2 outputs, steps ending at token 3 (reward 0.2) and token 3 (reward 0.6):
    # R = {0.2, 0.6}, mean 0.4, unbiased std sqrt(0.08) = 0.2828, r~ = -+0.2 / (0.2828 + eps)
    # (= -+0.7071 with eps 0) on tokens 1-3 (one step each, ending at the last token).
    ends = torch.tensor([[0, 1, 1, 1]] * 3 + [[0, 0, 0, 1]] * 2, dtype=torch.float)
    step_rewards = torch.cat([0.7 * ends[:3], torch.tensor([[0, 0, 0, 0.2], [0, 0, 0, 0.6]])])
    batch = rows_batch([0.7, 0.7, 0.7, 0.2, 0.6], [1, 1, 1, 2, 2])
    batch.step_ends, batch.step_rewards = ends, step_rewards
    adv, degenerate = process_advantages(step_rewards, ends, batch.group_ids, batch.loss_mask, eps=eps)
    a = 0.2 / (math.sqrt(0.08) + eps)
    assert torch.all(adv[:3] == 0)
    torch.testing.assert_close(adv[3:], torch.tensor([[0, -a, -a, -a], [0, a, a, a]]))
    assert degenerate.tolist() == [True, True, True, False, False]
    _, metrics = GRPO(GRPO.Config(std_eps=eps, supervision="process")).prepare(batch, None)
    assert metrics["grpo/zero_adv_group_frac"] == 0.5


def test_skipped_rewards_leave_the_group_statistics():
    # group 0: 1, NaN, 0, 0.5 -> the scored 1, 0, 0.5: mean 0.5, unbiased std
    # sqrt((0.25 + 0.25 + 0) / 2) = 0.5, A = 1, -1, 0; the skipped row gets 0.
    # group 1: 0.3, NaN -> one scored reward, its own mean: a constant group, A = 0.
    adv, degenerate = group_advantages(torch.tensor([1.0, float("nan"), 0.0, 0.5, 0.3, float("nan")]),
                                       torch.tensor([0, 0, 0, 0, 1, 1]), eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([1.0, 0.0, -1.0, 0.0, 0.0, 0.0]))
    assert degenerate.tolist() == [False] * 4 + [True] * 2
    # prepare drops the skipped rows and normalises the rest the same way
    batch, metrics = GRPO(GRPO.Config(beta=0.0, std_eps=0.0)).prepare(
        rows_batch([1.0, float("nan"), 0.0, 0.5, 0.3, float("nan")], [0, 0, 0, 0, 1, 1]), None)
    torch.testing.assert_close(batch.advantages[:, 1], torch.tensor([1.0, -1.0, 0.0, 0.0]))
    assert metrics["grpo/zero_adv_group_frac"] == 0.5


def test_reference_needed_only_with_kl():
    assert "reference" in GRPO(GRPO.Config(beta=0.04)).needs
    assert "reference" not in GRPO(GRPO.Config(beta=0.0)).needs


# -- process supervision --------------------------------------------------------------------------


def test_process_advantages_by_hand():
    # One group (id 7) of 2 outputs, T = 7, column 0 the prompt.
    #   output 0: tokens 1-4 trained, 2 steps ending at tokens 2 and 4, step rewards 0.9, 0.3
    #   output 1: tokens 1-6 (token 3 is tool output, not trained), 3 steps ending at 2, 4, 6,
    #             step rewards 0.5, 0.1, 0.7
    # R = {0.9, 0.3, 0.5, 0.1, 0.7}: mean 2.5 / 5 = 0.5, deviations 0.4, -0.2 | 0, -0.4, 0.2,
    # unbiased var (0.16 + 0.04 + 0 + 0.16 + 0.04) / 4 = 0.1, std c = sqrt(0.1) ~ 0.3162, so
    # r~ = 0.4 / c = 4c, -0.2 / c = -2c | 0, -4c, 2c   (0.1 / c = c).
    # A_{i,t} = sum of r~ of the steps ending at or after t:
    #   output 0: tokens 1-2: 4c - 2c = 2c;   tokens 3-4: -2c;   5-6 are padding: 0
    #   output 1: tokens 1-2: 0 - 4c + 2c = -2c;   token 3: tool output, 0;   token 4: -4c + 2c = -2c;
    #             tokens 5-6: 2c
    # A second group (id 3) whose step rewards are all 0.4 gets A = 0 everywhere.
    loss_mask = torch.tensor([
        [0, 1, 1, 1, 1, 0, 0],
        [0, 1, 1, 0, 1, 1, 1],
        [0, 1, 1, 1, 0, 0, 0],
        [0, 1, 1, 1, 1, 1, 0],
    ], dtype=torch.float)
    step_ends = torch.tensor([
        [0, 0, 1, 0, 1, 0, 0],
        [0, 0, 1, 0, 1, 0, 1],
        [0, 1, 0, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 0],
    ], dtype=torch.float)
    step_rewards = torch.tensor([
        [0, 0, 0.9, 0, 0.3, 0, 0],
        [0, 0, 0.5, 0, 0.1, 0, 0.7],
        [0, 0.4, 0, 0.4, 0, 0, 0],
        [0, 0, 0, 0, 0, 0.4, 0],
    ])
    groups = torch.tensor([7, 7, 3, 3])
    adv, degenerate = process_advantages(step_rewards, step_ends, groups, loss_mask, eps=0.0)
    c = math.sqrt(0.1)
    expected = torch.tensor([
        [0, 2 * c, 2 * c, -2 * c, -2 * c, 0, 0],
        [0, -2 * c, -2 * c, 0, -2 * c, 2 * c, 2 * c],
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ])
    torch.testing.assert_close(adv, expected)
    assert degenerate.tolist() == [False, False, True, True]
    # the normalised step rewards themselves: the advantage at a step end minus the next step end's
    assert adv[0, 2] - adv[0, 4] == pytest.approx(4 * c) and adv[1, 6] == pytest.approx(2 * c)
    # Dr. GRPO (no division): centred step rewards, 0.4 - 0.2 = 0.2 on output 0's first step
    centred, _ = process_advantages(step_rewards, step_ends, groups, loss_mask, scale=False)
    assert centred[0, 1].item() == pytest.approx(0.4 - 0.2) and centred[1, 5].item() == pytest.approx(0.2)


def test_process_supervision_with_one_step_per_output_is_outcome_supervision():
    batch = make_batch(seed=5)
    trained = batch.loss_mask > 0
    batch.step_ends = ((trained.long().cumsum(-1) == trained.sum(-1, keepdim=True)) & trained).float()  # last token
    batch.step_rewards = batch.rewards[:, None] * batch.step_ends
    outcome, m_out = GRPO(GRPO.Config()).prepare(batch, None)
    outcome_adv = outcome.advantages.clone()
    process, m_proc = GRPO(GRPO.Config(supervision="process")).prepare(batch, None)
    torch.testing.assert_close(process.advantages, outcome_adv)
    assert m_proc["grpo/zero_adv_group_frac"] == m_out["grpo/zero_adv_group_frac"]


def test_prepare_with_process_supervision_logs_and_masks():
    batch = with_steps(make_batch(seed=2), seed=2)
    batch.step_rewards[4:] = 0.5 * batch.step_ends[4:]  # group 1: every step reward equal
    batch, metrics = GRPO(GRPO.Config(supervision="process")).prepare(batch, None)
    assert torch.all(batch.advantages[batch.loss_mask == 0] == 0) and torch.all(batch.advantages[4:] == 0)
    assert metrics["grpo/zero_adv_group_frac"] == 0.5
    assert metrics["grpo/steps_mean"] == pytest.approx(float(batch.step_ends.sum(-1).mean()))
    assert metrics["grpo/adv_abs_mean"] > 0


def test_process_adv_abs_mean_is_a_token_mean_over_every_rank():
    # Under process supervision grpo/adv_abs_mean is a mean over trained tokens. Two processes
    # holding groups 0 and 1 log it with their rows as weight (4 each); a row-weighted average of
    # their token means, (m_0 + m_1) / 2, is not the mean over the n_0 + n_1 tokens of the batch,
    # (n_0 m_0 + n_1 m_1) / (n_0 + n_1). The reduction weights a token mean by its tokens.
    from rlzoo.runtime.distributed import MetricsReducer

    batch = with_steps(make_batch(seed=4), seed=4)
    batch.loss_mask[4:, 3:] = 0  # group 1's outputs are shorter: the ranks hold different token counts
    algo = GRPO(GRPO.Config(supervision="process"))
    whole, metrics = algo.prepare(batch, None)
    expected = float(whole.advantages.abs().sum() / whole.loss_mask.sum())
    assert metrics["grpo/adv_abs_mean"] == pytest.approx(expected)
    reducers = []
    for rows in (list(range(4)), list(range(4, 8))):
        reducer = MetricsReducer()
        reducer.add(algo.prepare(batch.select(rows), None)[1], len(rows))
        reducers.append(reducer)
    parts = [r.values["grpo/adv_abs_mean"][0][0] for r in reducers]
    assert abs((parts[0] + parts[1]) / 2 - expected) > 1e-3  # a row weighting would be off

    class TwoRanks:
        def gather(self, obj):
            return [dict(r.values) for r in reducers]

    assert reducers[0].reduce(TwoRanks())["grpo/adv_abs_mean"] == pytest.approx(expected, rel=1e-6)


def test_process_supervision_needs_step_rewards_and_a_known_name():
    from rlzoo.config import check_hyperparameters

    with pytest.raises(ConfigError, match=r"^algorithms.grpo.supervision: unknown 'steps'; known: outcome, process$"):
        check_hyperparameters("grpo", GRPO.Config(supervision="steps"))  # what the run checks before building it
    with pytest.raises(ConfigError, match=r"supervision: process needs step rewards: use a process reward model \(reward.name: prm\)$"):
        GRPO(GRPO.Config(supervision="process")).prepare(make_batch(), None)


def test_doctests():
    import doctest

    import rlzoo.algorithms.grpo

    result = doctest.testmod(rlzoo.algorithms.grpo)
    assert result.failed == 0 and result.attempted > 0
