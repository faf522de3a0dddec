"""PPO: GAE against a plain loop and by hand, coefficient form vs autograd of the clipped surrogate,
value-loss clipping and KL-shaped rewards by hand, and a few steps through the real runtime."""

import json
import math

import pytest
import torch

from rlzoo.algorithms.ppo import PPO, gae, kl_shaped_rewards, state_values, whiten
from rlzoo.interface import RolloutBatch
from rlzoo.losses import aggregate, surrogate_loss
from rlzoo.registry import register_reward
from helpers import TINY_MODEL, assert_every_weight_moved


@register_reward("test_ppo_len")
def _length_reward(prompt, completion, example) -> float:
    """A reward that varies with a random model's outputs: the completion's length in characters / 50."""
    return len(completion.strip()) / 50.0


class _ValueRuntime:
    """A RuntimeView of one process whose value model outputs fixed raw values."""

    def __init__(self, raw_values):
        self.raw_values = raw_values

    def values(self, batch):
        return self.raw_values

    def reduce_sum(self, values):
        return values


def make_batch(lengths=(3, 5, 1, 4), prompt=2, seed=0):
    """Rows of ``prompt`` prompt tokens then ``lengths[i]`` completion tokens, right-padded to T."""
    g = torch.Generator().manual_seed(seed)
    n, t = len(lengths), prompt + max(lengths) + 1
    mask = torch.zeros(n, t)
    for i, length in enumerate(lengths):
        mask[i, prompt : prompt + length] = 1
    return RolloutBatch(
        input_ids=torch.zeros(n, t, dtype=torch.long),
        attention_mask=torch.ones(n, t, dtype=torch.long),
        loss_mask=mask,
        group_ids=torch.arange(n),
        rewards=torch.rand(n, generator=g),
        ref_logprobs=-torch.rand(n, t, generator=g) * 2,
    ), g


def loop_gae(rewards, values, gamma, lam):
    """Textbook GAE of one trajectory, lists in, list out."""
    adv, next_adv, next_value = [0.0] * len(rewards), 0.0, 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_value - values[t]
        next_adv = adv[t] = delta + gamma * lam * next_adv
        next_value = values[t]
    return adv


@pytest.mark.parametrize("gamma,lam", [(0.9, 0.8), (0.99, 0.95), (1.0, 0.5)])
def test_gae_matches_a_python_loop(gamma, lam):
    batch, g = make_batch(lengths=(3, 7, 1, 5, 2), prompt=3)
    rewards = torch.randn(batch.loss_mask.shape, generator=g) * batch.loss_mask
    values = torch.randn(batch.loss_mask.shape, generator=g) * batch.loss_mask
    adv = gae(rewards, values, batch.loss_mask, gamma, lam)
    for i in range(len(batch)):
        cols = batch.loss_mask[i].nonzero().squeeze(-1)
        expected = loop_gae(rewards[i, cols].tolist(), values[i, cols].tolist(), gamma, lam)
        torch.testing.assert_close(adv[i, cols], torch.tensor(expected))
    assert torch.all(adv[batch.loss_mask == 0] == 0)


def test_gae_steps_over_untrained_tokens_inside_a_completion():
    # a tool-output token (mask 0) between trained tokens is not an action: same result as without it
    rewards, values = torch.tensor([[0.0, 0.5, 9.0, 1.0]]), torch.tensor([[0.0, 0.2, 9.0, 0.7]])
    mask = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    adv = gae(rewards, values, mask, 0.9, 0.8)
    expected = loop_gae([0.5, 1.0], [0.2, 0.7], 0.9, 0.8)
    torch.testing.assert_close(adv[0, [1, 3]], torch.tensor(expected))


def test_gae_by_hand_gamma_1_lambda_1_is_return_minus_value():
    # 3 tokens, r = (0.1, -0.2, 1.0), V = (0.5, 0.3, 0.8); gamma = lam = 1 -> A_t = sum_{k>=t} r_k - V_t
    #   A_3 = 1.0 - 0.8 = 0.2;  A_2 = (-0.2 + 1.0) - 0.3 = 0.5;  A_1 = (0.1 - 0.2 + 1.0) - 0.5 = 0.4
    rewards = torch.tensor([[0.0, 0.1, -0.2, 1.0]])
    values = torch.tensor([[0.0, 0.5, 0.3, 0.8]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    adv = gae(rewards, values, mask, 1.0, 1.0)
    torch.testing.assert_close(adv, torch.tensor([[0.0, 0.4, 0.5, 0.2]]))
    torch.testing.assert_close(adv + values * mask, torch.tensor([[0.0, 0.9, 0.8, 1.0]]))  # returns


def test_kl_folded_into_per_token_rewards_by_hand():
    # beta = 0.1, log pi_old - log pi_ref = (0.2, -0.4, 0.6) on 3 completion tokens, score 1.0:
    #   r = (-0.02, +0.04, -0.06 + 1.0)
    kl = torch.tensor([[0.0, 0.2, -0.4, 0.6, 0.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]])
    r = kl_shaped_rewards(torch.tensor([1.0]), kl, mask, beta=0.1)
    torch.testing.assert_close(r, torch.tensor([[0.0, -0.02, 0.04, 0.94, 0.0]]))


def test_prepare_aligns_values_and_folds_kl():
    # one row: prompt [a], completion [b, c]; raw value outputs at a, b, c are (0.3, 0.6, 99):
    # V(s_b) = 0.3 (read "a"), V(s_c) = 0.6 (read "a b"); the output at c (after the last token) is unused.
    batch = RolloutBatch(
        input_ids=torch.tensor([[5, 6, 7]]), attention_mask=torch.ones(1, 3, dtype=torch.long),
        loss_mask=torch.tensor([[0.0, 1.0, 1.0]]), group_ids=torch.tensor([0]), rewards=torch.tensor([1.0]),
        ref_logprobs=torch.tensor([[0.0, -1.0, -2.0]]),
    )
    old = torch.tensor([[0.0, -0.5, -2.5]])  # log pi_old - log pi_ref = (0.5, -0.5)
    algo = PPO(PPO.Config(beta=0.2, gamma=1.0, lam=1.0, whiten_advantages=False))
    batch.old_logprobs = old  # the runtime fills pi_old before prepare
    batch, metrics = algo.prepare(batch, _ValueRuntime(torch.tensor([[0.3, 0.6, 99.0]])))
    # r = (-0.1, 0.1 + 1.0); A_c = 1.1 - 0.6 = 0.5; A_b = (-0.1 + 1.1) - 0.3 = 0.7
    torch.testing.assert_close(batch.extras["values"], torch.tensor([[0.0, 0.3, 0.6]]))
    torch.testing.assert_close(batch.advantages, torch.tensor([[0.0, 0.7, 0.5]]))
    torch.testing.assert_close(batch.extras["returns"], torch.tensor([[0.0, 1.0, 1.1]]))
    assert batch.old_logprobs is old
    assert metrics["kl/reward_kl"] == pytest.approx(0.0) and metrics["reward/score_mean"] == 1.0


def test_prepare_with_process_supervision_by_hand():
    # PPO with a PRM's step rewards (supervision: process), beta = 0.1, gamma = lam = 1, no whitening.
    # Each step's reward sits on its last token, the KL penalty -beta * (log pi_old - log pi_ref) on
    # every trained token; the outcome score (5.0, 7.0 here) is not used. With gamma = lam = 1,
    # A_t = sum_{k >= t} r_k - V(s_t) and R_t = A_t + V(s_t).
    # row 0: trained tokens 1-3, steps end at 1 (reward 0.5) and 3 (reward 1.0);
    #        log pi_old - log pi_ref = (0.2, -0.1, 0.3) -> r = (0.5 - 0.02, 0.01, 1.0 - 0.03) = (0.48, 0.01, 0.97)
    #        raw values (0.4, 0.2, 0.6, 9, 9) -> V(s_1..3) = (0.4, 0.2, 0.6)
    #        R = (1.46, 0.98, 0.97), A = (1.46 - 0.4, 0.98 - 0.2, 0.97 - 0.6) = (1.06, 0.78, 0.37)
    # row 1: trained tokens 1-4, steps end at 2 (reward 0.2) and 4 (reward 0.8);
    #        log pi_old - log pi_ref = (0.1, 0.1, -0.2, 0) -> r = (-0.01, 0.2 - 0.01, 0.02, 0.8) = (-0.01, 0.19, 0.02, 0.8)
    #        raw values (0.1, 0.3, 0.5, 0.2, 7) -> V(s_1..4) = (0.1, 0.3, 0.5, 0.2)
    #        R = (1.0, 1.01, 0.82, 0.8), A = (0.9, 0.71, 0.32, 0.6)
    loss_mask = torch.tensor([[0.0, 1, 1, 1, 0], [0, 1, 1, 1, 1]])
    ref = torch.full((2, 5), -1.0)
    batch = RolloutBatch(
        input_ids=torch.zeros(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 5, dtype=torch.long),
        loss_mask=loss_mask, group_ids=torch.tensor([0, 1]), rewards=torch.tensor([5.0, 7.0]), ref_logprobs=ref,
        step_ends=torch.tensor([[0.0, 1, 0, 1, 0], [0, 0, 1, 0, 1]]),
        step_rewards=torch.tensor([[0.0, 0.5, 0, 1.0, 0], [0, 0, 0.2, 0, 0.8]]),
    )
    batch.old_logprobs = ref + torch.tensor([[0.0, 0.2, -0.1, 0.3, 0], [0, 0.1, 0.1, -0.2, 0]])
    raw = torch.tensor([[0.4, 0.2, 0.6, 9, 9], [0.1, 0.3, 0.5, 0.2, 7]])
    algo = PPO(PPO.Config(beta=0.1, gamma=1.0, lam=1.0, whiten_advantages=False, supervision="process"))
    batch, metrics = algo.prepare(batch, _ValueRuntime(raw))
    torch.testing.assert_close(batch.extras["values"], torch.tensor([[0.0, 0.4, 0.2, 0.6, 0], [0, 0.1, 0.3, 0.5, 0.2]]))
    torch.testing.assert_close(batch.extras["returns"], torch.tensor([[0.0, 1.46, 0.98, 0.97, 0], [0, 1.0, 1.01, 0.82, 0.8]]))
    torch.testing.assert_close(batch.advantages, torch.tensor([[0.0, 1.06, 0.78, 0.37, 0], [0, 0.9, 0.71, 0.32, 0.6]]))
    # total per-token reward per row: 1.46 and 1.0, mean 1.23
    assert metrics["reward/total_mean"] == pytest.approx(1.23)
    # the coefficient on the first update (pi_theta = pi_old) is A_t itself
    coef, _ = algo.coefficients(batch, batch.old_logprobs)
    torch.testing.assert_close(coef, batch.advantages)


def test_approx_kl_by_hand():
    # ppo/approx_kl is the k3 estimate of KL(pi_old || pi_theta) per trained token, with
    # x = log pi_theta - log pi_old: k3 = e^x - 1 - x. Two trained tokens, x = 0.1 and -0.2:
    #   e^0.1 - 1.1 = 0.0051709,  e^-0.2 - 0.8 = 0.0187308;  mean 0.0119508
    # (the untrained token, x = 3, is left out).
    batch = RolloutBatch(
        input_ids=torch.zeros(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 4, dtype=torch.long),
        loss_mask=torch.tensor([[0.0, 1, 1, 0]]), group_ids=torch.tensor([0]), rewards=torch.tensor([1.0]),
        old_logprobs=torch.tensor([[-1.0, -1, -1, -1]]), advantages=torch.tensor([[0.0, 1, 1, 0]]),
    )
    _, metrics = PPO(PPO.Config()).coefficients(batch, torch.tensor([[-1.0, -0.9, -1.2, 2.0]]))
    assert metrics["ppo/approx_kl"] == pytest.approx((math.exp(0.1) - 1.1 + math.exp(-0.2) - 0.8) / 2, rel=1e-5)
    assert metrics["ppo/approx_kl"] == pytest.approx(0.0119508, abs=1e-7)


def test_docstring_names_the_reward_models_rlzoo_ships():
    # the module docstring once said "rlzoo ships no reward model yet"; it names orm and prm, both registered
    import rlzoo.algorithms.ppo as ppo
    from rlzoo.registry import REWARDS

    assert "no reward model" not in ppo.__doc__
    assert "``reward.name: orm`` or ``prm``" in ppo.__doc__
    for name in ("orm", "prm"):
        REWARDS.get(name)


def test_state_values_shift_right_by_one():
    torch.testing.assert_close(state_values(torch.tensor([[1.0, 2.0, 3.0]])), torch.tensor([[0.0, 1.0, 2.0]]))


def test_whitened_advantages_have_zero_mean_unit_std_on_the_mask():
    batch, g = make_batch()
    x = torch.randn(batch.loss_mask.shape, generator=g) * 3 + 2
    w = whiten(x, batch.loss_mask)
    on = w[batch.loss_mask > 0]
    assert abs(float(on.mean())) < 1e-5 and abs(float(on.std()) - 1) < 1e-4
    assert torch.all(w[batch.loss_mask == 0] == 0)


def test_whitening_equal_advantages_gives_exactly_zero():
    # 7 rows x 5 tokens of 0.7 (the first step of a batch whose scores are all 0.7, with V = 0,
    # lam = gamma = 1 and no KL yet: A_t = 0.7 on every token). On paper mean 0.7, std 0 and
    # (A - mean) / (std + 1e-8) = 0; in float32 the mean is off by one ulp and the std ~6e-8, which
    # gave every token about +-0.85, all of one sign. Exactly 0 now (also for 0.1, 2.7).
    for value in (0.7, 0.1, 2.7):
        x = torch.full((7, 5), value)
        mask = torch.ones(7, 5)
        mask[0, 3:] = 0
        assert torch.all(whiten(x * mask, mask) == 0), value
    # through prepare: scores 0.7 on every row, V = 0, beta = 0, lam = 1 -> A = 0 after whitening
    batch, _ = make_batch(lengths=(3, 5, 2, 4, 5, 1, 3))
    batch.rewards = torch.full((7,), 0.7)
    batch.old_logprobs = batch.ref_logprobs.clone()
    algo = PPO(PPO.Config(beta=0.0, gamma=1.0, lam=1.0))
    batch, _ = algo.prepare(batch, _ValueRuntime(torch.zeros(batch.loss_mask.shape)))
    assert torch.all(batch.advantages == 0)


def native_ppo_objective(logp, old, adv, eps):
    """Eq. 1 per token (to maximise): min(rho A, clip(rho, 1 - eps, 1 + eps) A)."""
    ratio = torch.exp(logp - old)
    return torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)


@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum"])
def test_coefficient_gradient_equals_clipped_surrogate_gradient(mode):
    batch, g = make_batch(lengths=(6, 4, 7, 5, 3, 6), seed=1)
    n, t = batch.loss_mask.shape
    algo = PPO(PPO.Config(beta=0.04, gamma=0.95, lam=0.9))
    old = -torch.rand(n, t, generator=g) * 2
    batch.old_logprobs = old
    batch, _ = algo.prepare(batch, _ValueRuntime(torch.randn(n, t, generator=g)))
    adv, on = batch.advantages, batch.loss_mask > 0
    # ratios far from 1, clipped on both sides, for both signs of A
    logp0 = old + torch.randn(n, t, generator=g) * 0.5
    ratio = torch.exp(logp0 - old)
    for above, sign in ((True, 1), (True, -1), (False, 1), (False, -1)):
        outside = (ratio > 1.2) if above else (ratio < 0.8)
        assert (outside & on & (adv * sign > 0)).sum() >= 1, "every clip case must be exercised"

    logp = logp0.clone().requires_grad_(True)
    coef, metrics = algo.coefficients(batch, logp.detach())
    assert not coef.requires_grad
    surrogate_loss(coef, logp, batch.loss_mask, mode).backward()
    grad_coef = logp.grad.clone()

    logp = logp0.clone().requires_grad_(True)
    (-aggregate(native_ppo_objective(logp, old, adv, 0.2), batch.loss_mask, mode)).backward()
    torch.testing.assert_close(grad_coef, logp.grad, rtol=1e-5, atol=1e-7)
    assert 0 < metrics["policy/clip_frac"] < 1 and metrics["ppo/approx_kl"] > 0


def test_on_policy_coefficient_is_the_advantage():
    # first update: pi_theta = pi_old, rho = 1, GC = A_t (the paper's row)
    batch, g = make_batch()
    n, t = batch.loss_mask.shape
    old = -torch.rand(n, t, generator=g)
    algo = PPO(PPO.Config())
    batch.old_logprobs = old
    batch, _ = algo.prepare(batch, _ValueRuntime(torch.zeros(n, t)))
    coef, metrics = algo.coefficients(batch, old)
    torch.testing.assert_close(coef, batch.advantages)
    assert metrics["policy/clip_frac"] == 0 and metrics["ppo/approx_kl"] == 0


def test_value_loss_clipping_by_hand():
    # returns R = (1, 1, 0), old values V_old = (0, 0.9, 0), new V = (0.5, 0.5, -0.1), eps_v = 0.2:
    #   token 1: clip(0.5) = 0.2; max((0.5-1)^2, (0.2-1)^2) = 0.64   (clipped is worse: it counts)
    #   token 2: clip(0.5) = 0.7; max((0.5-1)^2, (0.7-1)^2) = 0.25   (unclipped is worse)
    #   token 3: clip(-0.1) = -0.1; both 0.01
    # L_V = 0.5 * mean(0.64, 0.25, 0.01) = 0.15; with vf_coef 0.5 the term is 0.075
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    batch = RolloutBatch(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long), mask,
                         torch.tensor([0]), torch.tensor([1.0]),
                         extras={"values": torch.tensor([[0.0, 0.0, 0.9, 0.0]]),
                                 "returns": torch.tensor([[0.0, 1.0, 1.0, 0.0]])})
    raw = torch.tensor([[0.5, 0.5, -0.1, 7.0]], requires_grad=True)  # state values are raw shifted right
    algo = PPO(PPO.Config(value_clip_eps=0.2, vf_coef=0.5))
    per_token, metrics = algo.extra_loss(batch, _ValueRuntime(raw))
    loss = aggregate(per_token, mask, "token-mean")  # the runtime's average over trained tokens
    assert float(loss.detach()) == pytest.approx(0.075)
    assert metrics["loss/value"] == pytest.approx(0.15)
    assert metrics["value/clip_frac"] == pytest.approx(1 / 3)
    loss.backward()
    # d/dV: token 1 is clipped (grad 0); token 2: 0.5 * 0.5 * 2 * (0.5 - 1) / 3; token 3: 0.5 * 0.5 * 2 * (-0.1) / 3
    torch.testing.assert_close(raw.grad, torch.tensor([[0.0, -0.25 / 3, -0.05 / 3, 0.0]]))


def test_needs():
    assert PPO(PPO.Config()).needs == {"reference", "old_logprobs", "value_model"}
    assert PPO(PPO.Config(beta=0.0)).needs == {"old_logprobs", "value_model"}


def test_few_steps_through_the_runtime(tmp_path):
    from rlzoo.config import load_config
    from rlzoo.train import train

    cfg = load_config("configs/quickstart.yaml", [
        *TINY_MODEL, "task.synthetic.eval_size=8", "eval.samples=2", "eval.ks=[1,2]",
        "eval.max_new_tokens=8", "sft.steps=2", "grpo.algorithm=ppo", "grpo.steps=2",
        "grpo.data.prompts_per_step=4", "grpo.data.samples_per_prompt=2", "grpo.generation.max_new_tokens=12",
        "grpo.optim.updates_per_batch=2", "grpo.optim.minibatches=2", "grpo.optim.micro_batch_size=2",
        "grpo.reward.name=test_ppo_len", f"output_dir={tmp_path}", "logging.progress=false",
    ])
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["stage"] == "grpo" and "loss/policy" in r]
    assert len(steps) == 2
    for r in steps:
        for key in ("loss/policy", "loss/value", "loss/extra", "value/mean", "ppo/approx_kl", "kl/reward_kl",
                    "reward/score_mean"):
            assert r[key] is not None and math.isfinite(r[key]), key
        # 2 updates x 2 minibatches: every minibatch after the first sees a moved policy, so the
        # mean k3 of KL(pi_old || pi_theta) is strictly positive (test_approx_kl_by_hand: its value)
        assert 0 <= r["policy/clip_frac"] <= 1 and r["ppo/approx_kl"] > 0
    assert_every_weight_moved(tmp_path / "sft" / "final", tmp_path / "grpo" / "final")
