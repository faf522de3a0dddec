"""Tool-integrated rollouts (rlzoo/runtime/tools.py): stop at code, run it, append output, go on.

A tiny random model never writes a code block, so the loop is driven by ``ScriptedLM``: a module
with a Hugging Face style ``generate`` that writes, for each row, a given text per round (round k =
the number of ```` ```output ```` blocks already in the row's context), one token per step, and
honours the stopping criteria as Hugging Face does (a stopped row gets pad tokens). Its scripts
go on past the end of a code block, so what is tested is the loop's own stopping.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlzoo.interface import Example
from rlzoo.runtime.generation import GenerationConfig, encode_prompts, sample
from rlzoo.runtime.tools import OUTPUT_BLOCK
from helpers import TINY_MODEL

P1 = "Question: Ann has 2 apples. Ann buys 3 more apples. How many apples does Ann have now?\nAnswer:"
P2 = "Question: Ben has 4 pens.\nAnswer:"
P3 = "Question: Cara has 9 coins. Cara loses 1 coin.\nAnswer:"

CODE = "```python\nprint(2 + 3)\n```"
HALLUCINATED = "\n```output\n999\n```\n"  # what the scripted policy would write after a block


class ScriptedLM(torch.nn.Module):
    """``scripts[prompt][k]`` is what the 'policy' writes in round k of a row with that prompt."""

    def __init__(self, tokenizer, scripts: dict[str, list[str]]):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # so the runtime finds a device
        self.tok = tokenizer
        self.scripts = scripts
        self.calls: list[int] = []  # rows of each generate call

    def generate(self, input_ids, attention_mask, max_new_tokens, pad_token_id, eos_token_id, stopping_criteria=None, **kw):
        self.calls.append(input_ids.shape[0])
        plans = []
        for row, mask in zip(input_ids, attention_mask):
            text = self.tok.decode(row[mask.bool()])
            prompt = next(p for p in self.scripts if text.startswith(p))
            plans.append(self.tok(self.scripts[prompt][text.count("```output")], add_special_tokens=False).input_ids
                         + [eos_token_id])
        seq, unfinished = input_ids, torch.ones(len(plans), dtype=torch.bool)
        for t in range(max_new_tokens):
            nxt = torch.tensor([p[t] if u and t < len(p) else pad_token_id for p, u in zip(plans, unfinished.tolist())])
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            unfinished &= nxt != eos_token_id
            if stopping_criteria is not None:
                unfinished &= ~stopping_criteria(seq, None)
            if not unfinished.any():
                break
        return seq


def gen_cfg(**kw) -> GenerationConfig:
    return GenerationConfig(**{"max_new_tokens": 120, "tool_rounds": 2, "tool_timeout_s": 5.0, **kw})


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def rollout(tokenizer, scripts, cfg, prompts=None, n=1):
    model = ScriptedLM(tokenizer, scripts)
    examples = [Example(p, "5") for p in (prompts or list(scripts))]
    return model, sample(model, tokenizer, examples, n, cfg)


def parts(tokenizer, batch, i):
    """(completion, generated, tool) token lists of row i, each in order."""
    lp = encode_prompts(tokenizer, [ex.prompt for ex in batch.examples], "cpu")[0].shape[1]
    region = torch.zeros_like(batch.attention_mask[i], dtype=torch.bool)
    region[lp:] = True
    real = region & batch.attention_mask[i].bool()
    gen = batch.loss_mask[i].bool()
    row = batch.input_ids[i]
    return row[real].tolist(), row[real & gen].tolist(), row[real & ~gen].tolist()


def test_code_block_gets_output_block_with_loss_mask_zero_exactly_there(tokenizer):
    # round 0 writes text, a block and then a made-up output; the loop must cut right after the
    # closing fence, run the code (prints 5) and append "\n```output\n5\n```\n" (mask 0)
    scripts = {P1: ["Let me compute.\n" + CODE + HALLUCINATED, "The answer is \\boxed{5}."]}
    model, batch = rollout(tokenizer, scripts, gen_cfg())
    eos = tokenizer.eos_token_id
    block = "\n" + OUTPUT_BLOCK.format("5")
    before, after = ids(tokenizer, "Let me compute.\n" + CODE), ids(tokenizer, "The answer is \\boxed{5}.")
    comp, gen, tool = parts(tokenizer, batch, 0)
    assert comp == before + ids(tokenizer, block) + after + [eos]
    assert gen == before + after + [eos]  # the policy's tokens, exactly as it sampled them
    assert tool == ids(tokenizer, block)
    # loss_mask = 0 exactly on the appended span: positions [Lp + len(before), + len(block))
    lp = encode_prompts(tokenizer, [P1], "cpu")[0].shape[1]
    mask = batch.loss_mask[0, lp:].tolist()
    assert mask == [1.0] * len(before) + [0.0] * len(tool) + [1.0] * (len(after) + 1)
    assert batch.completions[0] == "Let me compute.\n" + CODE + block + "The answer is \\boxed{5}."
    assert batch.extras["tool_calls"].tolist() == [1] and batch.extras["tool_failures"].tolist() == [0]
    assert model.calls == [1, 1]


def test_rows_without_code_are_unaffected(tokenizer):
    scripts = {P1: ["Let me compute.\n" + CODE, "So \\boxed{5}."], P2: [" 4 pens. The answer is \\boxed{4}."]}
    model, batch = rollout(tokenizer, scripts, gen_cfg())
    comp, gen, tool = parts(tokenizer, batch, 1)
    assert comp == gen == ids(tokenizer, " 4 pens. The answer is \\boxed{4}.") + [tokenizer.eos_token_id]
    assert tool == []
    assert batch.completions[1] == " 4 pens. The answer is \\boxed{4}."
    assert batch.extras["tool_calls"].tolist() == [1, 0]
    assert model.calls == [2, 1]  # round 1 continues only the row that ran code


def test_round_cap_leaves_later_blocks_as_plain_text(tokenizer):
    # tool_rounds=1: the first block runs; the second is generated through (the last round does
    # not stop at code blocks), so the made-up output after it stays, as policy tokens
    scripts = {P1: [CODE, "Check:\n```python\nprint(6)\n```" + HALLUCINATED + "\\boxed{5}"]}
    model, batch = rollout(tokenizer, scripts, gen_cfg(tool_rounds=1))
    assert batch.completions[0] == (CODE + "\n" + OUTPUT_BLOCK.format("5") + "Check:\n```python\nprint(6)\n```"
                                    + HALLUCINATED + "\\boxed{5}")
    assert batch.extras["tool_calls"].tolist() == [1]
    assert model.calls == [1, 1]
    _, _, tool = parts(tokenizer, batch, 0)
    assert tool == ids(tokenizer, "\n" + OUTPUT_BLOCK.format("5"))


def test_failing_program_appends_its_error_line_and_the_rollout_goes_on(tokenizer):
    scripts = {P1: ["```python\nx = 1 / 0\nprint(x)\n```", "Oops.\n" + CODE, "\\boxed{5}"]}
    _, batch = rollout(tokenizer, scripts, gen_cfg())
    text = batch.completions[0]
    assert "```output\nZeroDivisionError: division by zero\n```\nOops." in text
    assert text.endswith(OUTPUT_BLOCK.format("5") + "\\boxed{5}")
    assert batch.extras["tool_calls"].tolist() == [2]
    assert batch.extras["tool_failures"].tolist() == [1]


def test_batched_rows_with_different_rounds_come_out_aligned(tokenizer):
    # three prompts of different lengths, 2 samples each: 0, 1 and 2 tool calls per row
    scripts = {
        P1: ["A.\n" + CODE, "B.\n```python\nprint(7)\n```", "\\boxed{7}"],
        P2: [" \\boxed{4}"],
        P3: ["```python\nprint(9 - 1)\n```", "\\boxed{8}"],
    }
    model, batch = rollout(tokenizer, scripts, gen_cfg(), n=2)
    n, t = batch.input_ids.shape
    assert n == 6 and batch.loss_mask.shape == batch.attention_mask.shape == (n, t)
    lp = encode_prompts(tokenizer, [P1, P2, P3], "cpu")[0].shape[1]
    assert batch.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert batch.extras["tool_calls"].tolist() == [2, 2, 0, 0, 1, 1]
    assert model.calls == [6, 4, 2]
    for i, prompt in enumerate([P1, P1, P2, P2, P3, P3]):
        p = ids(tokenizer, prompt)
        # prompt left-padded to Lp, the completion starts at Lp and is right-padded
        assert batch.input_ids[i, lp - len(p) : lp].tolist() == p
        assert batch.attention_mask[i, : lp - len(p)].sum() == 0 and batch.attention_mask[i, lp - len(p) : lp].all()
        width = int(batch.attention_mask[i, lp:].sum())
        assert batch.attention_mask[i, lp : lp + width].all() and batch.attention_mask[i, lp + width :].sum() == 0
        assert batch.input_ids[i, lp + width :].eq(tokenizer.pad_token_id).all()
        assert (batch.loss_mask[i] <= batch.attention_mask[i]).all() and batch.loss_mask[i, :lp].sum() == 0
    assert batch.completions[0] == ("A.\n" + CODE + "\n" + OUTPUT_BLOCK.format("5") + "B.\n```python\nprint(7)\n```\n"
                                    + OUTPUT_BLOCK.format("7") + "\\boxed{7}")
    assert batch.completions[4] == "```python\nprint(9 - 1)\n```\n" + OUTPUT_BLOCK.format("8") + "\\boxed{8}"
    assert batch.completions[0] == batch.completions[1] and batch.completions[2] == " \\boxed{4}"


def test_token_budget_counts_tool_tokens_and_long_outputs_are_cut(tokenizer):
    eos = tokenizer.eos_token_id
    long_code = "```python\nprint('x' * 1000)\n```"
    scripts = {P1: [long_code, "\\boxed{5}"]}
    # output cut to 20 characters, then "..."
    _, batch = rollout(tokenizer, scripts, gen_cfg(tool_output_max_chars=20))
    assert batch.completions[0] == long_code + "\n" + OUTPUT_BLOCK.format("x" * 20 + "...") + "\\boxed{5}"
    # a budget that ends inside the output block: the block is cut there and the row ends
    budget = len(ids(tokenizer, long_code)) + 3
    _, batch = rollout(tokenizer, scripts, gen_cfg(max_new_tokens=budget, tool_output_max_chars=20))
    comp, gen, tool = parts(tokenizer, batch, 0)
    assert len(comp) == budget and len(tool) == 3 and eos not in comp
    assert gen == ids(tokenizer, long_code)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_without_code_the_tool_loop_gives_the_plain_sampler_result(tokenizer, tiny_model, temperature):
    # a random tiny Llama writes no code block: the tool loop must return exactly the plain
    # sampler's batch (tokens, masks, texts); sampled rows draw the same random numbers
    examples = [Example(P1, "5"), Example(P2, "4"), Example(P3, "8")]
    n = 1 if temperature == 0 else 2
    torch.manual_seed(1)
    plain = sample(tiny_model, tokenizer, examples, n, GenerationConfig(max_new_tokens=24, temperature=temperature))
    torch.manual_seed(1)
    tools = sample(tiny_model, tokenizer, examples, n, GenerationConfig(max_new_tokens=24, temperature=temperature,
                                                                         tool_rounds=2))
    assert plain.extras == {} and tools.extras["tool_calls"].sum() == 0
    assert torch.equal(plain.attention_mask, tools.attention_mask)
    assert torch.equal(plain.loss_mask, tools.loss_mask)
    assert torch.equal(plain.input_ids * plain.attention_mask, tools.input_ids * tools.attention_mask)
    assert plain.completions == tools.completions


def test_grpo_smoke_run_with_tool_rounds(tmp_path):
    from rlzoo.config import load_config
    from rlzoo.train import train

    cfg = load_config("configs/quickstart.yaml", [
        *TINY_MODEL, "task.synthetic.eval_size=8", "eval.samples=2", "eval.ks=[1,2]",
        "eval.max_new_tokens=16", "sft.steps=2", "sft.data.prompts_per_step=4", "grpo.steps=2",
        "grpo.data.prompts_per_step=2", "grpo.data.samples_per_prompt=2", "grpo.generation.max_new_tokens=24",
        "grpo.generation.tool_rounds=2", f"output_dir={tmp_path}", "logging.progress=false",
    ])
    summary = train(cfg)
    assert [s["name"] for s in summary["stages"]] == ["sft", "grpo"]
    import json

    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    grpo = [r for r in rows if r.get("stage") == "grpo" and "loss/policy" in r]
    assert len(grpo) == 2 and all(math.isfinite(r["loss/policy"]) for r in grpo)
    assert all(r["tools/calls"] >= 0 and "time/tools" in r for r in grpo)


def test_evaluation_runs_the_code_of_tool_integrated_answers_with_eval_tool_rounds(tokenizer):
    # the scripted policy writes a block and would make up its output ("999"); with
    # eval.tool_rounds the evaluation runs the block (prints 5), appends the real output, and the
    # policy goes on to its answer, which the tool reward grades. Without tool rounds it makes the
    # output up, its made-up answer is read and graded wrong.
    from rlzoo.run.evaluation import evaluate
    from rlzoo.rewards import make_reward

    scripts = {P1: ["Let me compute.\n" + CODE + HALLUCINATED + "So \\boxed{999}.", "The answer is \\boxed{5}."]}
    examples = [Example(P1, "5")]
    with_tools = evaluate(ScriptedLM(tokenizer, scripts), tokenizer, examples, make_reward("tool"), samples=0, ks=[],
                          max_new_tokens=120, tool_rounds=2, tool_timeout_s=5.0)
    without = evaluate(ScriptedLM(tokenizer, scripts), tokenizer, examples, make_reward("tool"), samples=0, ks=[],
                       max_new_tokens=120)
    assert with_tools["accuracy"] == 1.0 and without["accuracy"] == 0.0
