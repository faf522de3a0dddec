"""The stage runtime: one precision path for every model, KL 0 and ratio 1 before the first update,
ratios and clipping after it, no dropout in log-prob passes, gradient checkpointing, and nothing
of an earlier stage left alive."""

from __future__ import annotations

import gc
import json

import pytest
import torch

from rlzoo.config import load_config
from rlzoo.registry import register_reward
from rlzoo.runtime.stage import build_stage, train_step
from rlzoo.run.factories import build_task, initial_model, make_algorithm, make_reward
from helpers import TINY_MODEL


@register_reward("test_stage_length")
def _length_reward(prompt, completion, example) -> float:
    """Varies with what a random tiny model writes: the completion's length in characters / 40."""
    return len(completion) / 40.0


def make_stage(*overrides: str, stage: str = "grpo"):
    """The quickstart's ``stage`` on a tiny model, built as ``rlzoo train`` builds it."""
    cfg = load_config("configs/quickstart.yaml", [
        *TINY_MODEL, "task.synthetic.eval_size=4", "grpo.data.prompts_per_step=2", "grpo.data.samples_per_prompt=4",
        "grpo.generation.max_new_tokens=10", "grpo.reward.name=test_stage_length", "grpo.optim.micro_batch_size=4",
        *overrides,
    ])
    torch.manual_seed(0)
    task = build_task(cfg)
    lm, tokenizer = initial_model(cfg, task)
    s = cfg.stages[stage]
    return build_stage(stage, s, make_algorithm(cfg, s.algorithm), lm, tokenizer, task.train_stream(0), model_cfg=cfg.model,
                       mixed_precision=cfg.mixed_precision, seed=0, sample_seed=0, reward=make_reward(s))


def test_first_step_has_ratio_one_and_kl_zero_then_updates_see_ratios_and_clipping():
    # 6 updates of one batch at a high learning rate: the first update is on-policy (ratio 1,
    # KL 0: pi_theta = pi_old = pi_ref in every pass); later ones move away and get clipped
    st = make_stage("grpo.optim.updates_per_batch=6", "grpo.optim.lr=3e-2", "grpo.optim.warmup_steps=0",
                    "algorithms.grpo.clip_eps=0.05")
    seen = []
    coefficients = st.algorithm.coefficients

    def spy(batch, logp):
        coef, metrics = coefficients(batch, logp)
        seen.append(metrics)
        return coef, metrics

    st.algorithm.coefficients = spy
    metrics = train_step(st)
    assert seen[0]["policy/ratio_mean"] == 1.0 and seen[0]["kl/k3"] == 0.0 and seen[0]["policy/clip_frac"] == 0.0
    assert any(m["policy/ratio_mean"] != 1.0 for m in seen[1:])
    assert any(m["policy/clip_frac"] > 0 for m in seen[1:]) and metrics["policy/clip_frac"] > 0
    assert metrics["grpo/adv_abs_mean"] > 0 and metrics["kl/k3"] > 0


def _record_linear_dtypes(model: torch.nn.Module, into: list) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda mod, inp, out: into.append(out.dtype))


@pytest.mark.parametrize("chunk", ["0", "4096"], ids=["plain-head", "chunked-head"])
def test_bf16_autocast_runs_policy_and_reference_in_bf16_and_kl_is_zero_at_step_one(chunk):
    st = make_stage("mixed_precision=bf16", f"model.logprob_chunk_size={chunk}")
    policy_dtypes, reference_dtypes = [], []
    _record_linear_dtypes(st.lm, policy_dtypes)
    _record_linear_dtypes(st.rt.reference, reference_dtypes)
    metrics = train_step(st)
    assert policy_dtypes and set(policy_dtypes) == {torch.bfloat16}
    assert reference_dtypes and set(reference_dtypes) == {torch.bfloat16}
    assert metrics["kl/k3"] == 0.0 and metrics["policy/ratio_mean"] == 1.0
    assert next(st.lm.parameters()).dtype == torch.float32  # autocast, not the weight dtype (model.dtype)


def test_dropout_is_off_in_every_log_prob_pass_unless_asked_for():
    from rlzoo.runtime.models import disable_dropout

    st = make_stage()
    assert all(m.p == 0.0 for m in st.lm.modules() if isinstance(m, torch.nn.Dropout))
    # a model with dropout: after disable_dropout, train-mode and eval-mode log-probs agree
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, attention_dropout=0.5))
    ids, mask = torch.randint(0, 40, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    lm.train()
    assert not torch.equal(lm(ids, attention_mask=mask).logits, lm(ids, attention_mask=mask).logits)  # dropout is on
    disable_dropout(lm)
    lm.train()
    train_mode = lm(ids, attention_mask=mask).logits
    lm.eval()
    torch.testing.assert_close(train_mode, lm(ids, attention_mask=mask).logits)
    assert lm.config.attention_dropout == 0.0


def test_gradient_checkpointing_gives_the_same_step():
    after = []
    for on in ("false", "true"):
        st = make_stage(f"model.gradient_checkpointing={on}", "grpo.algorithm=ppo")
        assert st.lm.is_activation_checkpointing == (on == "true")
        train_step(st)
        after.append(torch.cat([p.detach().flatten() for p in st.lm.parameters()]))
    torch.testing.assert_close(after[0], after[1], rtol=0, atol=1e-6)


def test_a_stage_after_a_stage_holds_no_earlier_optimizer_and_unscales_once(tmp_path, monkeypatch):
    # through the public plugin interface: an algorithm that counts the optimizers alive at each
    # step, and a spy on the accelerator's unscale_gradients
    from accelerate import Accelerator

    from rlzoo.train import train

    calls: list[int] = []
    original = Accelerator.unscale_gradients

    def spy(self, optimizer=None):
        calls.append(id(optimizer))
        return original(self, optimizer)

    monkeypatch.setattr(Accelerator, "unscale_gradients", spy)
    plugin = tmp_path / "counting.py"
    plugin.write_text(
        "import gc, torch\n"
        "from rlzoo.algorithms.sft import SFT\n"
        "from rlzoo.registry import register_algorithm\n"
        "ALIVE = []\n"
        "@register_algorithm('counting_sft')\n"
        "class CountingSFT(SFT):\n"
        "    def prepare(self, batch, runtime):\n"
        "        gc.collect()\n"
        "        ALIVE.append(sum(type(o) is torch.optim.AdamW for o in gc.get_objects()))\n"
        "        return batch, {}\n"
    )
    cfg = load_config("configs/quickstart.yaml", [
        *TINY_MODEL, "task.synthetic.eval_size=4", "eval.samples=0", "eval.max_new_tokens=4", f"plugins=[{plugin}]",
        "sft.algorithm=counting_sft", "sft.steps=2", "sft.data.prompts_per_step=4",
        "grpo.algorithm=counting_sft", "grpo.steps=3", "grpo.data.source=dataset", "grpo.data.prompts_per_step=4",
        "grpo.optim.minibatches=2", f"output_dir={tmp_path / 'run'}", "logging.progress=false",
    ])
    gc.collect()
    before = sum(type(o) is torch.optim.AdamW for o in gc.get_objects())
    train(cfg)
    import sys

    alive = next(m for name, m in sys.modules.items() if name.startswith("rlzoo_plugin_counting")).ALIVE
    assert alive == [before + 1] * 5  # during each stage, its own optimizer only
    assert len(calls) == 2 + 3 * 2  # one unscale per optimizer step (2 minibatches in stage 2)
    assert len(set(calls[:2])) == 1 and len(set(calls[2:])) == 1 and calls[0] != calls[2]
    gc.collect()
    assert sum(type(o) is torch.optim.AdamW for o in gc.get_objects()) == before
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss/policy" in r] == [1, 2, 1, 2, 3]


def test_dpo_scores_only_its_pairs_with_the_reference_and_its_first_step_is_the_early_passs():
    # DPO's prepare keeps 2 of a question's samples and reads no log-prob, so the reference pass
    # runs after it, on the pairs; the step equals one whose reference saw every sample first
    overrides = ["grpo.algorithm=dpo", "grpo.data.samples_per_prompt=4", "grpo.data.pool_prompts=4",
                 "grpo.optim.micro_batch_size=4", "grpo.optim.lr=1e-2"]
    rows_seen, weights = [], []
    for before in (False, True):
        st = make_stage(*overrides)
        st.algorithm.logprobs_before_prepare = before
        reference = st.rt.reference_logprobs
        st.rt.reference_logprobs = lambda batch: rows_seen.append(len(batch)) or reference(batch)
        metrics = train_step(st)
        assert metrics["train/num_sequences"] > 0
        weights.append(torch.cat([p.detach().flatten() for p in st.rt.policy.parameters()]))
    assert rows_seen[0] < rows_seen[1] == 8  # the pairs only, then all 2 x 4 samples of the step
    assert rows_seen[0] == metrics["train/num_sequences"]
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=1e-6)
