"""``task.name: dataset``: the user's own prompt/answer file (docs/data.md, "Your own data").

Every file format gives the same examples; columns map by name, extra columns reach a TRL-style
reward as keyword arguments; the template; the held-out split; conversational prompts; one-line
errors naming file and row; and a 2-step run through ``rlzoo.train.train``."""

from __future__ import annotations

import itertools
import re
import json
import shutil
from pathlib import Path

import pytest

from helpers import TINY_MODEL
from rlzoo.config import ConfigError, DatasetConfig, load_config
from rlzoo.data.dataset import DatasetTask
from rlzoo.data.templates import apply_chat_template, format_prompt
from rlzoo.errors import DataError
from rlzoo.rewards import make_reward

ROWS = [
    {"prompt": "What is 2 + 3?", "answer": 5, "solution": "2 + 3 = 5.\nThe answer is \\boxed{5}.", "difficulty": "easy"},
    {"prompt": "What is 6 * 7?", "answer": 42, "solution": "6 * 7 = 42.\nThe answer is \\boxed{42}.", "difficulty": "hard"},
    {"prompt": "What is 9 - 4?", "answer": 5, "solution": "9 - 4 = 5.\nThe answer is \\boxed{5}.", "difficulty": "easy"},
]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "user_data"


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def task(train: Path, eval: Path | None = None, chat_template: bool = False, **kw) -> DatasetTask:
    return DatasetTask(DatasetConfig(train=str(train), eval=None if eval is None else str(eval), **kw), chat_template)


def write_every_format(tmp_path: Path, rows: list[dict]) -> list[Path]:
    """The rows as jsonl, parquet, csv, arrow and a save_to_disk folder."""
    import datasets

    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "rows.parquet"))
    ds.to_csv(str(tmp_path / "rows.csv"), index=False)
    ds.save_to_disk(str(tmp_path / "saved"))
    shutil.copy(next((tmp_path / "saved").glob("*.arrow")), tmp_path / "rows.arrow")  # the arrow file save_to_disk wrote
    return [jsonl(tmp_path / "rows.jsonl", rows), tmp_path / "rows.parquet", tmp_path / "rows.csv", tmp_path / "rows.arrow",
            tmp_path / "saved"]


def test_every_file_format_gives_the_same_examples(tmp_path):
    held = jsonl(tmp_path / "held.jsonl", [{"prompt": "What is 1 + 1?", "answer": "2"}])
    seen = []
    for path in write_every_format(tmp_path, ROWS):
        t = task(path, held)
        seen.append([(e.prompt, e.answer, e.solution, e.meta) for e in t.train_examples()])
    assert all(s == seen[0] for s in seen[1:])
    prompt, answer, solution, meta = seen[0][1]
    assert (prompt, answer, solution) == ("What is 6 * 7?", "42", ROWS[1]["solution"])  # prompt as it is, answer a string
    assert meta == {"source": "dataset", "format": "cot", "line": 2, "difficulty": "hard"}  # the extra column by name
    assert [e.answer for e in task(held.parent / "rows.jsonl", held).eval_examples()] == ["2"]


def test_columns_map_by_name_and_the_rows_own_columns_win_over_rlzoos_meta(tmp_path):
    rows = [{"question": "Q1", "final": 3.5, "worked": "w1", "solution": "not this one", "source": "web", "format": "pot"},
            {"question": "Q2", "final": "x^2", "worked": None, "solution": "s", "source": "book", "format": "pot"}]
    held = jsonl(tmp_path / "held.jsonl", [{"question": "Q0", "final": 1, "worked": "w", "solution": "s",
                                            "source": "web", "format": "pot"}])
    t = task(jsonl(tmp_path / "t.jsonl", rows), held, prompt="question", answer="final", solution="worked")
    a, b = t.train_examples()
    assert (a.prompt, a.answer, a.solution, b.answer, b.solution) == ("Q1", "3.5", "w1", "x^2", None)
    # unmapped columns land in meta; the row's source and format replace rlzoo's, line is rlzoo's
    assert a.meta == {"source": "web", "format": "pot", "line": 1, "solution": "not this one"}
    # solution: None takes a "solution" column when the file has one, and none when it has not
    assert [e.solution for e in task(jsonl(tmp_path / "s.jsonl", ROWS), held, prompt="question", answer="final")
            .eval_examples()] == ["s"]
    bare = jsonl(tmp_path / "bare.jsonl", [{"prompt": "Q", "answer": 1}, {"prompt": "Q3", "answer": 2}])
    assert task(bare, eval_size=1).train_examples()[0].solution is None


def test_template_a_format_name_or_a_format_string_naming_other_columns(tmp_path):
    train, held = jsonl(tmp_path / "t.jsonl", ROWS), jsonl(tmp_path / "h.jsonl", [ROWS[0]])
    assert task(train, held).eval_examples()[0].prompt == "What is 2 + 3?"  # None: as it is
    pot = task(train, held, template="pot").eval_examples()[0]
    assert pot.prompt == format_prompt("What is 2 + 3?", "pot") and pot.meta["format"] == "pot"  # format follows the template
    assert task(train, held, template="pot", format="tir").eval_examples()[0].meta["format"] == "tir"
    custom = task(train, held, template="[{difficulty}] Question: {prompt}\nAnswer:").eval_examples()[0]
    assert custom.prompt == "[easy] Question: What is 2 + 3?\nAnswer:" and custom.meta["format"] == "cot"
    with pytest.raises(DataError) as err:
        task(train, held, template="{prompt} ({level})").eval_examples()
    assert str(err.value) == (f"{held}:1: task.dataset.template names field 'level', which this row does not have "
                              "(it has answer, difficulty, prompt, solution)")
    for bad, says in [("Q: {question}", "has no {prompt}"), ("{prompt} {0}", "field {0} is not a column name"),
                      ("{prompt} }", "is not a format string")]:
        with pytest.raises(ValueError, match=f"^task\\.dataset\\.template: .*{re.escape(says)}"):
            task(train, held, template=bad)


def test_extra_columns_reach_a_trl_reward_as_keyword_arguments(tmp_path):
    t = task(jsonl(tmp_path / "t.jsonl", ROWS), jsonl(tmp_path / "h.jsonl", [{"prompt": "Q", "answer": 1}]))
    examples = t.train_examples()
    reward = make_reward({"name": f"{EXAMPLE / 'reward.py'}:correct"})
    completions = ["The answer is \\boxed{5}.", "The answer is \\boxed{41}.", "The answer is 5."]
    assert reward.score(examples, completions)[0] == [1.0, 0.0, 1.0]
    seen = {}

    def spy(prompts, completions, answer, difficulty, line, **kwargs):
        seen.update(prompts=prompts, answer=answer, difficulty=difficulty, line=line, rest=sorted(kwargs))
        return [{"easy": 1.0, "hard": 2.0}[d] for d in difficulty]

    from rlzoo.rewards import Reward, RewardFunction

    assert Reward([RewardFunction("spy", spy)]).score(examples, completions)[0] == [1.0, 2.0, 1.0]
    assert seen["difficulty"] == ["easy", "hard", "easy"] and seen["answer"] == ["5", "42", "5"] and seen["line"] == [1, 2, 3]
    assert seen["rest"] == ["completion_ids", "format", "solution", "source"]
    # a column named like one of the call's own arguments stays in meta and does not clash with it
    clash_rows = [{"prompt": "Q1", "answer": 5, "completion_ids": "x", "completions": "y"}]
    clash = task(jsonl(tmp_path / "c.jsonl", clash_rows), tmp_path / "h.jsonl").train_examples()
    assert clash[0].meta["completion_ids"] == "x" and reward.score(clash, ["\\boxed{5}"], [[1]])[0] == [1.0]


def test_without_an_eval_file_a_seeded_shuffle_holds_out_rows_never_trained_on(tmp_path):
    rows = [{"prompt": f"q{i}", "answer": i} for i in range(40)] + [{"prompt": "q3", "answer": 3}]  # q3 twice
    train = jsonl(tmp_path / "t.jsonl", rows)
    t = task(train)
    held = [e.prompt for e in t.eval_examples()]
    assert len(held) == 4  # default: 10% of 41 rows (at most 500, at least 1)
    assert held == [e.prompt for e in task(train).eval_examples()]  # deterministic
    assert held != [e.prompt for e in task(train, eval_seed=1).eval_examples()]
    assert held != ["q0", "q1", "q2", "q3"]  # not the file's first rows
    trained = {e.prompt for e in t.train_examples()}
    assert not trained & set(held) and trained | set(held) == {f"q{i}" for i in range(40)}
    assert t.skipped_overlap == 41 - len(t.train_examples())
    stream = [e.prompt for e in itertools.islice(t.train_stream(3), 200)]
    assert set(stream) == trained and stream == [e.prompt for e in itertools.islice(task(train).train_stream(3), 200)]
    assert [e.prompt for e in task(train, eval_size=2).eval_examples()] == [e.prompt for e in task(train, eval_size=2).eval_examples()]
    assert len(task(train, eval_size=7).eval_examples()) == 7 and len(t.corpus(5)) == 5
    with pytest.raises(DataError, match=r"^task\.dataset\.eval_size: holding out 41 of the 41 rows of .* leaves none to train on"):
        task(train, eval_size=41).train_examples()
    with pytest.raises(DataError, match="are the same file"):
        task(train, train)


class ChatTokenizer:
    """A tokenizer with a chat template, as far as rlzoo uses one."""

    chat_template = "given"

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        assert add_generation_prompt is True and tokenize is False
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


def test_conversational_prompts_need_the_chat_template_and_render_every_message(tmp_path):
    chat = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}], "answer": "5"},
            {"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                        {"role": "user", "content": "What is 1 + 1?"}], "answer": 2}]
    held = jsonl(tmp_path / "h.jsonl", [{"prompt": "What is 9 + 9?", "answer": 18}])
    train = jsonl(tmp_path / "t.jsonl", chat)
    with pytest.raises(DataError) as err:
        task(train, held).train_examples()
    assert str(err.value) == (f"{train}:1: field 'prompt' is a list of chat messages: set task.chat_template: true, "
                              "so that the tokenizer's chat template renders them")
    a, b = task(train, held, chat_template=True, template="{prompt} Answer briefly.").train_examples()
    assert a.prompt == "What is 2 + 3? Answer briefly." and b.prompt == "What is 1 + 1? Answer briefly."  # the last user message
    wrapped = apply_chat_template([a, b], ChatTokenizer())
    assert wrapped[0].prompt == "<system>Be brief.<user>What is 2 + 3? Answer briefly.<assistant>"
    assert wrapped[1].prompt == "<user>Hi<assistant>Hello<user>What is 1 + 1? Answer briefly.<assistant>"
    assert wrapped[0].meta["raw_prompt"] == a.prompt and apply_chat_template(wrapped, ChatTokenizer()) == wrapped
    plain = apply_chat_template(task(train, held, chat_template=True).eval_examples(), ChatTokenizer())  # a string prompt: one user turn
    assert plain[0].prompt == "<user>What is 9 + 9?<assistant>"


def test_conversational_parquet_through_a_real_tokenizers_chat_template(tmp_path, tokenizer):
    import datasets
    from transformers import PreTrainedTokenizerFast

    rows = [{"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": f"Q{i}"}], "answer": str(i)} for i in range(3)]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "chat.parquet"))
    t = task(tmp_path / "chat.parquet", chat_template=True, eval_size=1)
    tok = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, eos_token=tokenizer.eos_token)
    tok.chat_template = "{% for m in messages %}[{{ m.role }}]{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
    [ex] = apply_chat_template(t.eval_examples(), tok)
    assert ex.prompt == f"[system]S\n[user]{ex.meta['raw_prompt']}\n[assistant]"


@pytest.mark.parametrize("rows, where, message", [
    ([{"question": "Q", "answer": 1}], 1, "no field 'prompt' (task.dataset.prompt); the file has fields answer, question"),
    ([ROWS[0], {"prompt": "Q"}], 2, "missing field 'answer' (task.dataset.answer)"),
    ([ROWS[0], {"prompt": "Q", "answer": None}], 2, "field 'answer' (task.dataset.answer) is empty: every row needs an answer"),
    ([ROWS[0], {"prompt": "Q", "answer": [1, 2]}], 2, "field 'answer' must be a string or a number, got list"),
    ([ROWS[0], {"prompt": "Q", "answer": True}], 2, "field 'answer' must be a string or a number, got bool"),
    ([ROWS[0], {"prompt": 7, "answer": 1}], 2, "field 'prompt' must be a string or a list of chat messages"),
    ([{"prompt": "Q", "answer": 1, "raw_prompt": "x"}], 1, "field 'raw_prompt' has a name rlzoo keeps for itself"),
])
def test_a_bad_row_is_one_line_naming_file_and_row(tmp_path, rows, where, message):
    train = jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(DataError) as err:
        task(train, jsonl(tmp_path / "h.jsonl", [{"prompt": "H", "answer": 0}])).train_examples()
    assert str(err.value).startswith(f"{train}:{where}: {message}") and "\n" not in str(err.value), str(err.value)


def test_a_table_names_its_columns_and_a_missing_file_or_train_is_one_line(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"question": "Q", "answer": 1}]).to_parquet(str(tmp_path / "t.parquet"))
    with pytest.raises(DataError, match=r"t\.parquet:1: no column 'prompt' \(task\.dataset\.prompt\); the file has columns answer, question$"):
        task(tmp_path / "t.parquet", eval_size=1).train_examples()
    with pytest.raises(DataError, match=r"^task\.dataset\.train: file not found: .*nope\.jsonl$"):
        task(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match=r"^task\.dataset\.eval: file not found: .*nope\.parquet$"):
        task(tmp_path / "t.parquet", tmp_path / "nope.parquet")
    from rlzoo.run.factories import build_task

    with pytest.raises(ConfigError, match=r"^task\.dataset\.train: required with task\.name: dataset"):
        build_task(load_config(None, ["stages.x.steps=1", "task.name=dataset"]))


def test_validation_reads_every_row_and_eval_sets_override_the_eval_file(tmp_path):
    from rlzoo.run.factories import build_task, eval_sets
    from rlzoo.run.validate import validate

    train, held = jsonl(tmp_path / "t.jsonl", ROWS), jsonl(tmp_path / "h.jsonl", [{"prompt": "Q", "answer": 1}])
    other = jsonl(tmp_path / "other.jsonl", [{"prompt": "O1", "answer": 1}, {"prompt": "O2", "answer": 2}])
    base = ["stages.x.steps=1", "task.name=dataset", f"task.dataset.train={train}", f"task.dataset.eval={held}"]
    cfg = load_config(None, base + [f"eval.sets={{other: {{dataset: {{eval: {other}, eval_size: 1}}}}}}"])
    validate(cfg)
    assert [e.prompt for e in build_task(cfg).eval_examples()] == ["Q"]
    assert [e.prompt for e in eval_sets(cfg)["other"]] == ["O1"]
    jsonl(other, [{"prompt": "O1"}])
    with pytest.raises(DataError, match=r"^eval\.sets\.other\.task: .*other\.jsonl:1: no field 'answer'"):
        validate(cfg)
    with pytest.raises(ConfigError, match=r"^task\.dataset\.template: .*has no \{prompt\}"):
        validate(load_config(None, base + ["task.dataset.template='Q: {question}'"]))


def test_two_steps_of_sft_then_grpo_on_the_worked_example(tmp_path):
    from rlzoo.train import train

    cfg = load_config("configs/user_data.yaml", [
        *TINY_MODEL, f"output_dir={tmp_path}", "logging.progress=false", "task.dataset.eval=null", "task.dataset.eval_size=3",
        "eval.samples=0", "eval.max_new_tokens=4", "sft.steps=2", "sft.data.prompts_per_step=4", "grpo.steps=2",
        "grpo.data.prompts_per_step=2", "grpo.data.samples_per_prompt=2", "grpo.generation.max_new_tokens=6",
        f"grpo.reward.name={EXAMPLE / 'reward.py'}:correct_by_difficulty",
    ])
    summary = train(cfg)
    assert [s["eval"]["num_examples"] for s in summary["stages"]] == [3, 3]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if r.get("stage") == "grpo" and "reward/mean" in r]) == 2
