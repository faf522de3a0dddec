"""Reasoning steps (rlzoo/reward_models/steps.py): the rules, and step ends on the tokens of real batches."""

from __future__ import annotations

import pytest
import torch

from rlzoo.errors import RegistryError
from rlzoo.interface import Example, RolloutBatch
from rlzoo.runtime.generation import GenerationConfig, encode_pairs, sample
from rlzoo.reward_models.steps import (
    STEP_RULES, decode_with_offsets, first_error, split_steps, step_end_mask, step_end_tokens, step_spans,
)

SOLUTION = " 8 - 6 = 2.\n2 * 3 = 6.\nThe answer is \\boxed{6}."


# -- rules -----------------------------------------------------------------------------------------


def test_line_rule_skips_blank_lines_and_strips_each_step():
    text = "  a = 1. \n\n \tb = 2.\n"
    #       0123456789 ...: line 1 is "a = 1." at 2..8; line 3 " \tb = 2." has "b = 2." at 13..19
    assert step_spans(text) == [(2, 8), (13, 19)]
    assert split_steps(text) == ["a = 1.", "b = 2."]
    assert split_steps(SOLUTION) == ["8 - 6 = 2.", "2 * 3 = 6.", "The answer is \\boxed{6}."]


def test_paragraph_rule_splits_at_blank_lines_only():
    text = "First we add.\n8 + 1 = 9.\n  \n\nThen we double.\n9 * 2 = 18.\n\n"
    assert split_steps(text, "paragraph") == ["First we add.\n8 + 1 = 9.", "Then we double.\n9 * 2 = 18."]


def test_sentence_rule_ends_at_punctuation_before_space_or_end_and_at_newlines():
    text = "We have 2.5 kg. Is it 3? Yes! So\nthe answer is 3.5."
    # "2.5" and "3.5" are not ends (a digit follows the '.'); the newline ends "Yes! So"'s "So"
    assert split_steps(text, "sentence") == ["We have 2.5 kg.", "Is it 3?", "Yes!", "So", "the answer is 3.5."]
    assert split_steps(SOLUTION, "sentence") == split_steps(SOLUTION, "line")


def test_no_steps_in_blank_text_and_unknown_rule_lists_the_known_ones():
    assert step_spans("") == step_spans(" \n \n") == []
    with pytest.raises(RegistryError, match="unknown step rule 'word'; known: line, paragraph, sentence"):
        step_spans("x", "word")
    assert STEP_RULES.names() == ["line", "paragraph", "sentence"]


def test_first_error():
    assert first_error([True, False, True]) == 1  # the first wrong step, whatever follows
    assert first_error([False]) == 0
    assert first_error([True, True]) is None and first_error([]) is None


# -- characters to tokens --------------------------------------------------------------------------


def test_decode_with_offsets_counts_characters_not_tokens(tokenizer):
    # "é" is two bytes, so two byte-level tokens: its character is complete at the second one;
    # EOS adds no character; every digit is its own token
    ids = tokenizer.encode(" 12é.", add_special_tokens=False) + [tokenizer.eos_token_id]
    text, ends = decode_with_offsets(tokenizer, ids)
    assert text == " 12é."
    assert [tokenizer.decode([i]) for i in ids][:3] == [" ", "1", "2"]
    assert ends == [1, 2, 3, 3, 4, 5, 5]  # ' ', '1', '2', byte 1 of é, byte 2 of é, '.', EOS
    long = tokenizer.encode(SOLUTION * 30, add_special_tokens=False)
    text, ends = decode_with_offsets(tokenizer, long)
    assert text == SOLUTION * 30 and ends == [len(tokenizer.decode(long[: k + 1])) for k in range(len(long))]


class LigatureTokenizer:
    """A tokenizer whose decoding is not local: "a" then "b" decode together as one "X"."""

    def decode(self, ids, **kwargs):
        return "".join(ids).replace("ab", "X")


def test_decode_with_offsets_falls_back_to_whole_prefixes_when_decoding_is_not_local():
    # prefixes "a", "aa", "aab" decode to "a", "aa", "aX": against the text "aX" that is 1, 1, 2
    # characters (the second "a" completes nothing until "b" turns it into "X")
    assert decode_with_offsets(LigatureTokenizer(), ["a", "a", "b"]) == ("aX", [1, 1, 2])


def test_step_end_tokens_merges_tool_steps_and_ends_the_last_step_at_the_last_generated_token():
    # tokens:         0:'a.'  1:'\n'  2:'7'  3:'\n'  4:'b.'  5:' '  6:EOS     (2 and 3 are tool output)
    # characters end:   2       3       4      5       7       8      8
    char_ends = [2, 3, 4, 5, 7, 8, 8]
    generated = [True, True, False, False, True, True, True]
    # steps "a." (0, 2): token 0; "7" (3, 4): token 2 only, tool output, so no end of its own;
    # "b." (5, 7): token 4, but it is the last step, which ends at the last generated token, EOS
    assert step_end_tokens([(0, 2), (3, 4), (5, 7)], char_ends, generated) == [0, 6]
    # a step of generated and tool tokens ("a.\n7" as one step, 0..4) ends at its last generated token
    assert step_end_tokens([(0, 4), (5, 7)], char_ends, generated) == [1, 6]
    assert step_end_tokens([], char_ends, generated) == [6]  # generated but no step: one step
    assert step_end_tokens([(0, 2), (5, 7)], char_ends, [False] * 7) == []  # nothing generated: no step end


# -- step_end_mask on hand-made batches --------------------------------------------------------------


def make_batch(tokenizer, rows: list[tuple[str, list[tuple[str, str]]]]) -> RolloutBatch:
    """A batch from (prompt, [(piece, kind), ...]) rows, kind "gen", "tool" or "eos": prompts
    left-padded and completions right-padded, as ``generation.sample`` lays them out."""
    enc = lambda s: tokenizer(s, add_special_tokens=False).input_ids
    prompts = [enc(p) for p, _ in rows]
    comps = []
    for _, pieces in rows:
        ids, gen = [], []
        for text, kind in pieces:
            new = [tokenizer.eos_token_id] if kind == "eos" else enc(text)
            ids += new
            gen += [kind != "tool"] * len(new)
        comps.append((ids, gen))
    lp, lc = max(map(len, prompts)), max(len(c[0]) for c in comps)
    pad = tokenizer.pad_token_id
    input_ids, attention, loss = [], [], []
    for p, (c, g) in zip(prompts, comps):
        left, right = lp - len(p), lc - len(c)
        input_ids.append([pad] * left + p + c + [pad] * right)
        attention.append([0] * left + [1] * (len(p) + len(c)) + [0] * right)
        loss.append([0.0] * (left + len(p)) + [float(x) for x in g] + [0.0] * right)
    n = len(rows)
    return RolloutBatch(
        input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(attention), loss_mask=torch.tensor(loss),
        group_ids=torch.arange(n), rewards=torch.zeros(n),
    )


def ends_of(batch, mask, tokenizer, i):
    """(column, decoded token) of each step end of row i."""
    cols = mask[i].nonzero().flatten().tolist()
    return [(c, tokenizer.decode([int(batch.input_ids[i, c])])) for c in cols]


def test_left_padded_rows_with_and_without_eos(tokenizer):
    batch = make_batch(tokenizer, [
        ("Question: a long prompt with many words in it\nAnswer:", [(SOLUTION, "gen"), ("", "eos")]),
        ("Q:", [(SOLUTION, "gen"), ("", "eos")]),
        ("Q:", [(" 8 - 6 = 2.\n2 * 3", "gen")]),  # cut by the length limit: no EOS
        ("Q: nothing generated", []),
    ])
    mask = step_end_mask(batch, tokenizer)
    assert mask.shape == batch.input_ids.shape and mask.dtype == torch.float32
    start = int(batch.loss_mask[0].nonzero()[0])  # completions start at one column for every row
    # ' ', '8', ' -', ' ', '6', ' =', ' ', '2', '.'  -> the first step's '.' is completion token 8
    # '\n', '2', ' *', ' ', '3', ' =', ' ', '6', '.'  -> the second's is token 17
    # '\n', 'The', ' answer', ' is', ' \\', 'boxed', '{', '6', '}.', EOS -> the third ends at EOS, 27
    expected = [(start + 8, "."), (start + 17, "."), (start + 27, tokenizer.eos_token)]
    assert ends_of(batch, mask, tokenizer, 0) == expected
    assert ends_of(batch, mask, tokenizer, 1) == expected  # left padding moves no step end
    # without EOS the last step ("2 * 3") ends at the last generated token, '3'
    assert ends_of(batch, mask, tokenizer, 2) == [(start + 8, "."), (start + 13, "3")]
    assert mask[3].sum() == 0  # no generated token, no step end
    assert torch.all(mask <= batch.loss_mask)  # every step end is a generated token


def test_trailing_text_after_the_last_step_and_an_empty_completion(tokenizer):
    batch = make_batch(tokenizer, [
        ("Q:", [(" 1 + 1 = 2.\n\n", "gen"), ("", "eos")]),  # blank lines then EOS
        ("Q:", [("", "eos")]),  # only EOS: one step, ending there
        ("Q:", [(" \n", "gen")]),  # only whitespace, no EOS
    ])
    mask = step_end_mask(batch, tokenizer)
    eos = tokenizer.eos_token
    assert [t for _, t in ends_of(batch, mask, tokenizer, 0)] == [eos]  # one step, ended at EOS
    assert [t for _, t in ends_of(batch, mask, tokenizer, 1)] == [eos]
    assert [t for _, t in ends_of(batch, mask, tokenizer, 2)] == ["\n"]


def test_tool_output_block_in_the_middle(tokenizer):
    code = " We compute.\n```python\nprint(2 * 3)\n```"
    output = "\n```output\n6\n```\n"
    batch = make_batch(tokenizer, [
        ("Q:", [(code, "gen"), (output, "tool"), ("The answer is \\boxed{6}.", "gen"), ("", "eos")]),
        ("Q:", [(code, "gen"), (output, "tool")]),  # the length limit hit inside the output block
        ("Q:", [(" So we get", "gen"), (" 42\n", "tool"), ("Done.", "gen"), ("", "eos")]),
    ])
    mask = step_end_mask(batch, tokenizer)
    assert torch.all(mask <= batch.loss_mask)
    # lines: "We compute." "```python" "print(2 * 3)" "```" | "```output" "6" "```" (tool) | the answer
    # the three tool-only lines merge into the step of the closing fence, which the policy wrote
    tokens = [t for _, t in ends_of(batch, mask, tokenizer, 0)]
    assert len(split_steps(code + output + "The answer is \\boxed{6}.")) == 8
    assert tokens == [".", tokenizer.decode(tokenizer.encode("```python", add_special_tokens=False)[-1:]),
                      ")", "```", tokenizer.eos_token]
    # cut inside the output: the last step ends at the last generated token, the fence
    assert [t for _, t in ends_of(batch, mask, tokenizer, 1)] == tokens[:3] + ["```"]
    assert mask[0].sum() == 5 and mask[1].sum() == 4
    # a step whose end is tool output ("So we get 42") ends at its last generated token
    get = tokenizer.decode(tokenizer.encode(" So we get", add_special_tokens=False)[-1:])
    assert [t for _, t in ends_of(batch, mask, tokenizer, 2)] == [get, tokenizer.eos_token]


def test_a_real_tool_integrated_rollout(tokenizer):
    # the runtime's own tool loop appends the output block (loss_mask 0); steps stay on policy tokens
    from test_tool_rollouts import P1, ScriptedLM, gen_cfg

    model = ScriptedLM(tokenizer, {P1: ["Let me compute.\n```python\nprint(2 + 3)\n```", "The answer is \\boxed{5}."]})
    batch = sample(model, tokenizer, [Example(P1, "5")], 1, gen_cfg())
    mask = step_end_mask(batch, tokenizer)
    assert batch.completions[0].count("\n") == 7  # text, 3 code lines, 3 output lines, answer
    tokens = [t for _, t in ends_of(batch, mask, tokenizer, 0)]
    assert tokens[0] == "." and tokens[2:] == [")", "```", tokenizer.eos_token] and len(tokens) == 5
    assert torch.all(mask <= batch.loss_mask)


def test_rules_on_one_batch(tokenizer):
    text = " We add. 8 + 1 = 9.\n\nWe double. 9 * 2 = 18.\nThe answer is \\boxed{18}."
    batch = make_batch(tokenizer, [("Q:", [(text, "gen"), ("", "eos")])])
    counts = {rule: int(step_end_mask(batch, tokenizer, rule).sum()) for rule in ("line", "paragraph", "sentence")}
    assert counts == {"line": 3, "paragraph": 2, "sentence": 5}
    sentence = [t for _, t in ends_of(batch, step_end_mask(batch, tokenizer, "sentence"), tokenizer, 0)]
    assert sentence == [".", ".", ".", ".", tokenizer.eos_token]


# -- property: as many step ends as the decoded text has steps --------------------------------------


PIECES = ["8", "12", " +", " =", ".", "!", "?", "\n", "\n\n", " \n", " ", "é", "The", " answer", "2.5", "\\boxed{4}"]


@pytest.mark.parametrize("rule", ["line", "paragraph", "sentence"])
def test_step_ends_count_the_steps_of_the_decoded_text(tiny_model, tokenizer, task, rule):
    import random

    from rlzoo.data.synthetic import SyntheticConfig, SyntheticTask

    rng = random.Random(0)  # random texts of pieces that make and break steps of every rule
    texts = ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 30))) for _ in range(60)]
    examples = task.eval_examples()[:6]
    batches = [
        encode_pairs(tokenizer, [Example("Q:", "4")] * len(texts), texts, "cpu"),
        sample(tiny_model, tokenizer, examples, 4, GenerationConfig(max_new_tokens=40), seed=1),  # a random policy
    ]
    for fmt in ("cot", "pot", "tir"):  # gold solutions in the three formats
        exs = SyntheticTask(SyntheticConfig(eval_size=4, eval_format=fmt)).eval_examples()
        batches.append(encode_pairs(tokenizer, exs, [e.solution for e in exs], "cpu"))
    for batch in batches:
        mask = step_end_mask(batch, tokenizer, rule)
        assert torch.all(mask <= batch.loss_mask)
        for i, completion in enumerate(batch.completions):
            # max(1, .): a completion with no step (blank, or only EOS) is one step
            assert int(mask[i].sum()) == max(1, len(step_spans(completion, rule))), completion
            last_generated = int(batch.loss_mask[i].nonzero().flatten()[-1])
            assert int(mask[i].nonzero().flatten()[-1]) == last_generated
    assert sum(len(step_spans(t, rule)) > 2 for t in texts) > 10  # the texts do have several steps


def test_doctests():
    import doctest

    import rlzoo.reward_models.steps as steps_module

    result = doctest.testmod(steps_module)
    assert result.failed == 0 and result.attempted > 0
