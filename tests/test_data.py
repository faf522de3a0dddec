"""Data: the loaders on the real GSM8K / MATH files, bad rows, the three formats, the mix, templates."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest

from rlzoo.data.files import FileTask, FilesConfig, gsm8k_answer, load_examples
from rlzoo.config import NOISE_KINDS, NoiseConfig
from rlzoo.errors import DataError
from rlzoo.data.synthetic import SyntheticConfig, SyntheticTask, question_key
from rlzoo.data.templates import TEMPLATES, apply_chat_template, chat_stream, format_prompt
from rlzoo.interface import Example
from rlzoo.rewards.verifier import verify

DATA = Path(__file__).parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "gsm8k" / "test.jsonl").is_file(), reason="../shared/data not present")


def write(tmp_path: Path, lines: list[str], name: str = "rows.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- loaders on the real files ------------------------------------------------------------------


@needs_data
def test_gsm8k_rows_fields_answer_and_annotations():
    rows = load_examples(DATA / "gsm8k" / "train.jsonl", limit=20)
    assert len(rows) == 20
    first = rows[0]
    # row 1: "Natalia sold 48/2 = <<48/2=24>>24 clips in May. ... #### 72"
    assert first.prompt.startswith("Natalia sold clips to 48 of her friends in April")
    assert first.prompt.endswith("\nPlease reason step by step, and put your final answer within \\boxed{}.")
    assert first.answer == "72"
    assert first.solution == (
        "Natalia sold 48/2 = 24 clips in May.\n"
        "Natalia sold 48+24 = 72 clips altogether in April and May.\n"
        "The answer is \\boxed{72}."
    )
    assert first.meta == {"source": "gsm8k", "format": "cot", "line": 1}
    for ex in rows:
        assert "<<" not in ex.solution and ">>" not in ex.solution and "####" not in ex.solution
        assert re.fullmatch(r"-?\d+", ex.answer)
        assert verify(ex.solution, ex.answer)


@needs_data
def test_gsm8k_thousands_commas_are_stripped():
    path = DATA / "gsm8k" / "test.jsonl"
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    i = next(i for i, r in enumerate(raw) if re.search(r"#### -?\d{1,3}(,\d{3})+$", r["answer"]))
    ex = load_examples(path, limit=i + 1)[i]
    assert ex.answer == raw[i]["answer"].rsplit("#### ", 1)[1].replace(",", "")
    assert "," not in ex.answer and verify(ex.solution, ex.answer)
    assert gsm8k_answer("x <<2*3=6>>6\n#### -1,234") == ("x 6", "-1234")


@needs_data
def test_math500_rows():
    rows = load_examples(DATA / "math" / "test.jsonl", limit=10)
    first = json.loads((DATA / "math" / "test.jsonl").read_text().splitlines()[0])
    assert rows[0].prompt == format_prompt(first["problem"], "cot")
    assert rows[0].answer == first["answer"] and rows[0].solution == first["solution"]
    assert rows[0].meta["unique_id"] == first["unique_id"] and rows[0].meta["source"] == "math"
    for ex in rows:
        assert verify(ex.solution, ex.answer)


@needs_data
def test_other_formats_ask_for_them_and_have_no_reference_solution():
    for fmt in ("pot", "tir"):
        ex = load_examples(DATA / "gsm8k" / "test.jsonl", format=fmt, limit=1)[0]
        assert ex.prompt == TEMPLATES[fmt].format(question=json.loads((DATA / "gsm8k" / "test.jsonl").open().readline())["question"])
        assert ex.solution is None and ex.answer == "18" and ex.meta["format"] == fmt


def test_plain_schema(tmp_path):
    path = write(tmp_path, [
        json.dumps({"question": "What is 2 + 3?", "answer": 5}),
        json.dumps({"question": "What is 1/2 + 1/2?", "answer": "1", "solution": "It is \\boxed{1}."}),
        "",  # blank lines are skipped
        json.dumps({"prompt": "Q: 7 - 1 =\nA:", "answer": "6"}),
    ])
    a, b, c = load_examples(path)
    assert a.prompt == format_prompt("What is 2 + 3?") and a.answer == "5" and a.solution is None
    assert b.solution == "It is \\boxed{1}."
    assert c.prompt == "Q: 7 - 1 =\nA:" and c.meta["line"] == 4


# -- bad rows and missing files: one line naming file and line ------------------------------------


@pytest.mark.parametrize(
    "lines, line, message",
    [
        (['{"question": "q", "answer": "a\\n#### 1"}', '{"question": "q", "answer": '], 2, "invalid JSON"),
        (['{"question": "q", "answer": "a\\n#### 1"}', '', '{"question": "q"}'], 3, "missing field 'answer'"),
        (['{"question": "q", "answer": "a\\n#### 1"}', '{"question": 3, "answer": "a\\n#### 2"}'], 2,
         "field 'question' must be a string, got int"),
        (['{"question": "q", "answer": "a\\n#### 1"}', '{"question": "q", "answer": "no final line"}'], 2,
         "no final '#### N' line"),
        (['{"problem": "p", "solution": "s", "answer": "1"}', '{"problem": "p", "answer": "1"}'], 2,
         "missing field 'solution' (math rows need problem, solution, answer)"),
        (['{"problem": "p", "solution": "s", "answer": ["1"]}'], 1, "field 'answer' must be a string, got list"),
        (['{"question": "q", "answer": true}'], 1, "field 'answer' must be a string or a number, got bool"),
        (['["question", "answer"]'], 1, "expected a JSON object, got list"),
        (['{"text": "q", "label": 1}'], 1, "cannot tell the schema from fields ['label', 'text']"),
    ],
)
def test_bad_row_names_file_and_line(tmp_path, lines, line, message):
    path = write(tmp_path, lines)
    with pytest.raises(DataError) as err:
        load_examples(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}:{line}: ") and message in text, text


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match=r"^file not found: .*nope\.jsonl$"):
        load_examples(tmp_path / "nope.jsonl")
    real = write(tmp_path, ['{"question": "q", "answer": "1"}'])
    with pytest.raises(DataError, match=r"^task\.files\.eval: file not found: .*missing\.jsonl$"):
        FileTask("gsm8k", FilesConfig(train=str(real), eval=str(tmp_path / "missing.jsonl")))
    with pytest.raises(DataError, match="are the same file"):
        FileTask("math", FilesConfig(train=str(real), eval=str(real)))


def test_missing_default_file_through_config(tmp_path, monkeypatch):
    from rlzoo.config import load_config
    from rlzoo.run.factories import build_task

    monkeypatch.chdir(tmp_path)  # ../shared/data does not exist from here
    cfg = load_config(None, ["stages.x.steps=1", "task.name=math"])
    with pytest.raises(DataError, match=r"^task\.files\.train: file not found: \.\./shared/data/math/train\.jsonl$"):
        build_task(cfg)


# -- the file task --------------------------------------------------------------------------------


def test_file_task_stream_is_seeded_shuffled_endless_and_skips_held_out(tmp_path):
    rows = [json.dumps({"question": f"q{i}", "answer": f"r\n#### {i}"}) for i in range(10)]
    train = write(tmp_path, rows, "train.jsonl")
    held = write(tmp_path, rows[7:], "eval.jsonl")  # q7..q9 are held out
    task = FileTask("gsm8k", FilesConfig(train=str(train), eval=str(held), eval_size=2))
    assert [ex.answer for ex in task.eval_examples()] == ["7", "8"]
    first = [ex.answer for ex in itertools.islice(task.train_stream(3), 21)]
    assert first == [ex.answer for ex in itertools.islice(task.train_stream(3), 21)]
    assert first != [ex.answer for ex in itertools.islice(task.train_stream(4), 21)]
    for epoch in range(3):  # every pass is a permutation of the 7 training rows (q9 too is excluded)
        assert sorted(first[7 * epoch : 7 * epoch + 7]) == [str(i) for i in range(7)]
    assert first[:7] != [str(i) for i in range(7)]
    assert task.skipped_overlap == 3
    assert len(task.corpus(5)) == 5


@needs_data
def test_gsm8k_task_from_config_defaults(monkeypatch):
    from rlzoo.config import load_config
    from rlzoo.run.factories import build_task

    monkeypatch.chdir(Path(__file__).parents[1])  # the defaults are relative to the repository root
    cfg = load_config(None, ["stages.x.steps=1", "task.name=gsm8k", "task.files.eval_size=5"])
    task = build_task(cfg)
    held = task.eval_examples()
    assert len(held) == 5 and held[0].answer == "18"
    ex = next(task.train_stream(0))
    assert ex.solution.endswith(f"\\boxed{{{ex.answer}}}.")


# -- the three synthetic formats and the mix ------------------------------------------------------


def run_program(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True).stdout


def test_tir_solutions_are_well_formed_and_their_code_prints_the_output_block():
    task = SyntheticTask(SyntheticConfig(format="tir", eval_size=8))
    examples = list(itertools.islice(task.train_stream(0), 30))
    pattern = re.compile(r" .+\.\n```python\n(.*?)\n```\n```output\n(.*?)\n```\nThe answer is \\boxed\{(\d+)\}\.", re.DOTALL)
    programs, outputs = [], []
    for ex in examples:
        assert ex.meta["format"] == "tir" and "Python" in ex.prompt
        m = pattern.fullmatch(ex.solution)
        assert m, ex.solution
        assert m.group(2) == m.group(3) == ex.answer
        assert verify(ex.solution, ex.answer)
        programs.append(m.group(1))
        outputs.append(m.group(2))
    # each block, run on its own by plain exec, prints what its output block says
    for code, shown in zip(programs[:5], outputs):
        assert run_program(code).strip() == shown
    # and all of them at once in one interpreter, to keep the test fast
    script = "import io, contextlib\nfor c in %r:\n    b = io.StringIO()\n    with contextlib.redirect_stdout(b): exec(c, {})\n    print(b.getvalue().strip())" % programs
    assert run_program(script).split() == outputs


def test_pot_programs_print_the_answer():
    task = SyntheticTask(SyntheticConfig(format="pot", eval_size=8))
    exs = task.eval_examples()
    codes = [re.fullmatch(r"\n```python\n(.*)\n```", ex.solution, re.DOTALL).group(1) for ex in exs]
    script = "import io, contextlib\nfor c in %r:\n    b = io.StringIO()\n    with contextlib.redirect_stdout(b): exec(c, {})\n    print(b.getvalue().strip())" % codes
    assert run_program(script).split() == [ex.answer for ex in exs]


def test_format_mix_ratios_and_determinism():
    mix = {"cot": 0.5, "pot": 0.25, "tir": 0.25}
    task = SyntheticTask(SyntheticConfig(format_mix=mix, eval_size=16))
    n = 4000
    stream = list(itertools.islice(task.train_stream(0), n))
    counts = Counter(ex.meta["format"] for ex in stream)
    for fmt, w in mix.items():  # binomial sd <= sqrt(0.25 * 4000) ~ 32, so 5 sd ~ 160 draws = 4%
        assert abs(counts[fmt] / n - w) < 0.04, counts
    again = list(itertools.islice(task.train_stream(0), 200))
    assert [asdict(e) for e in again] == [asdict(e) for e in stream[:200]]
    other = [e.meta["format"] for e in itertools.islice(task.train_stream(1), 200)]
    assert other != [e.meta["format"] for e in stream[:200]]
    # the prompt says which format is wanted
    for ex in stream[:50]:
        fmt = ex.meta["format"]
        assert ("Write a Python program" in ex.prompt) == (fmt == "pot")
        assert ("Reason with Python code" in ex.prompt) == (fmt == "tir")


def test_mix_changes_only_formats_not_problems_nor_held_out_set():
    plain = SyntheticTask(SyntheticConfig(eval_size=32))
    mixed = SyntheticTask(SyntheticConfig(eval_size=32, format_mix={"cot": 1, "pot": 1, "tir": 2}))
    assert [asdict(e) for e in mixed.eval_examples()] == [asdict(e) for e in plain.eval_examples()]
    assert all(e.meta["format"] == "cot" for e in mixed.eval_examples())
    a = list(itertools.islice(plain.train_stream(5), 300))
    b = list(itertools.islice(mixed.train_stream(5), 300))
    assert [(x.answer, x.meta["ops"]) for x in a] == [(y.answer, y.meta["ops"]) for y in b]
    # never a held-out question, in any format; question_key sees through the format hint
    held = {question_key(e.prompt) for e in plain.eval_examples()}
    assert len(held) == 32 and not any(question_key(ex.prompt) in held for ex in b)
    same = [SyntheticTask(SyntheticConfig(eval_size=4, eval_format=f)).eval_examples()[0] for f in ("cot", "pot", "tir")]
    assert len({e.prompt for e in same}) == 3 and len({question_key(e.prompt) for e in same}) == 1


def test_without_format_hint_every_prompt_is_the_bare_question():
    mix = {"cot": 0.7, "pot": 0.3}
    hinted = SyntheticTask(SyntheticConfig(eval_size=32, format_mix=mix))
    bare = SyntheticTask(SyntheticConfig(eval_size=32, format_mix=mix, format_hint=False))
    a = list(itertools.islice(hinted.train_stream(3), 200))
    b = list(itertools.islice(bare.train_stream(3), 200))
    # same problems, formats and solutions; only the prompt lost its hint
    assert [(x.answer, x.solution, x.meta) for x in a] == [(y.answer, y.solution, y.meta) for y in b]
    assert {y.meta["format"] for y in b} == {"cot", "pot"}
    for x, y in zip(a, b):
        assert y.prompt == "Question: " + question_key(x.prompt) + "\nAnswer:"
    assert len({question_key(y.prompt) for y in b}) == len({y.prompt for y in b})
    held = {question_key(e.prompt) for e in bare.eval_examples()}
    assert held == {question_key(e.prompt) for e in hinted.eval_examples()}
    assert not any(question_key(y.prompt) in held for y in b)
    assert not any("Python" in t.split("\nAnswer:")[0] for t in bare.corpus(20))


def test_eval_format_is_configurable_and_problems_stay_fixed():
    cot = SyntheticTask(SyntheticConfig(eval_size=16)).eval_examples()
    tir = SyntheticTask(SyntheticConfig(eval_size=16, eval_format="tir")).eval_examples()
    assert [e.answer for e in cot] == [e.answer for e in tir]
    assert all(e.meta["format"] == "tir" and "```output" in e.solution for e in tir)


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:16]


def before_issue_13(example: dict) -> dict:
    """An example as the task wrote it before issue 13: chain-of-thought on one line (the
    equations joined by spaces) and meta without the problem's ``start`` and ``steps``."""
    if example["meta"]["format"] == "cot":
        example = {**example, "solution": example["solution"].replace("\n", " ")}
    return {**example, "meta": {k: example["meta"][k] for k in ("format", "ops")}}


def test_default_task_texts_are_pinned():
    # Issue 13 (reward models) changed the texts on purpose: a cot solution has one equation per
    # line, so its reasoning steps are its lines, and meta records the problem (start, steps) for
    # the step oracle. The digests below are of the new texts; the old ones (taken before tir,
    # format_mix and eval_format existed) are checked on the texts with that change undone, which
    # shows the problems, held-out set and every other text are the same as ever.
    task = SyntheticTask(SyntheticConfig())
    held, train = task.eval_examples(), list(itertools.islice(task.train_stream(0), 500))
    assert digest([asdict(e) for e in held]) == "b42d1b2cc08ab059"
    assert digest([asdict(e) for e in train]) == "5f935a7e8c7af6ba"
    assert digest(task.corpus(300)) == "029863f419f97110"  # the tokenizer's corpus (so the tokenizer)
    assert digest([before_issue_13(asdict(e)) for e in held]) == "0e67523a64d98b4b"
    assert digest([before_issue_13(asdict(e)) for e in train]) == "5832ac47e610be77"
    corpus_before = [t if "```" in t else t.replace(".\n", ". ") for t in task.corpus(300)]  # cot texts only
    assert digest(corpus_before) == "9b532d946fc04fa3"
    pot = SyntheticTask(SyntheticConfig(format="pot", eval_size=50))
    held, train = pot.eval_examples(), list(itertools.islice(pot.train_stream(0), 500))
    assert digest([asdict(e) for e in held]) == "83c366c71431f0c4"
    assert digest([asdict(e) for e in train]) == "284cdf637dc0daaf"
    assert digest([before_issue_13(asdict(e)) for e in held]) == "1ccfb4b3f76ce2aa"
    assert digest([before_issue_13(asdict(e)) for e in train]) == "79f1380ab4f4e0f6"


def test_meta_records_the_problem():
    # Ann has 8 ...; 8 - 6 = 2; 2 * 3 = 6: meta["steps"] replays to the answer and its length is ops
    task = SyntheticTask(SyntheticConfig(eval_size=50))
    for ex in task.eval_examples():
        value = ex.meta["start"]
        for op, b, y in ex.meta["steps"]:
            value = {"+": value + b, "-": value - b, "*": value * b, "/": value // b}[op]
            assert value == y
        assert str(value) == ex.answer and ex.meta["ops"] == len(ex.meta["steps"])
        lines = ex.solution.split("\n")  # one equation per line, then the answer line
        assert len(lines) == ex.meta["ops"] + 1 and lines[-1] == f"The answer is \\boxed{{{ex.answer}}}."


def test_corpus_covers_tir_when_the_task_uses_it():
    corpus = SyntheticTask(SyntheticConfig()).corpus(50)
    assert len(corpus) == 100 and not any("```output" in t for t in corpus)  # cot + pot
    for cfg in (SyntheticConfig(format_mix={"cot": 1, "tir": 1}), SyntheticConfig(eval_format="tir")):
        with_tir = SyntheticTask(cfg).corpus(50)
        assert len(with_tir) == 150 and corpus == [t for i, t in enumerate(with_tir) if i % 3 != 2]
        assert all("```output" in t for t in with_tir[2::3])


def test_bad_format_config():
    with pytest.raises(ValueError, match="task.synthetic.format_mix must be one of cot, pot, tir; got 'cod'"):
        SyntheticTask(SyntheticConfig(format_mix={"cod": 1.0}))
    with pytest.raises(ValueError, match="positive sum"):
        SyntheticTask(SyntheticConfig(format_mix={"cot": 0.0}))
    with pytest.raises(ValueError, match="task.synthetic.eval_format"):
        SyntheticTask(SyntheticConfig(eval_format="xyz"))


# -- imperfect demonstrations: task.synthetic.noise -------------------------------------------------


def noisy_task(**noise) -> SyntheticTask:
    return SyntheticTask(SyntheticConfig(eval_size=32, noise=NoiseConfig(**noise)))


def replay(start: int, lines: list[str]) -> tuple[list[tuple[int, str, int, int]], int]:
    """The equations of a cot solution's lines, as (x, op, b, y), and the boxed value."""
    eqs = [tuple(int(g) if g.lstrip("-").isdigit() else g for g in re.fullmatch(r"(-?\d+) ([-+*/]) (\d+) = (-?\d+)\.", ln).groups())
           for ln in lines[:-1]]
    boxed = int(re.fullmatch(r"The answer is \\boxed\{(-?\d+)\}\.", lines[-1]).group(1))
    return eqs, boxed


def test_noise_never_changes_problems_answers_or_the_held_out_set():
    clean, noisy = noisy_task(), noisy_task(rate=0.5)
    assert [asdict(e) for e in noisy.eval_examples()] == [asdict(e) for e in clean.eval_examples()]
    assert clean.corpus(50) == noisy.corpus(50)  # the tokenizer is the same too
    a = list(itertools.islice(clean.train_stream(7), 400))
    b = list(itertools.islice(noisy.train_stream(7), 400))
    assert [(x.prompt, x.answer, x.meta["steps"]) for x in a] == [(y.prompt, y.answer, y.meta["steps"]) for y in b]
    for x, y in zip(a, b):  # answer stays the true one; only a corrupted solution differs, and says so
        assert verify(x.solution, y.answer) and x.answer == str(x.meta["steps"][-1][2])
        assert (y.solution != x.solution) <= ("noise" in y.meta) and y.meta.get("noise", "skip_last") in NOISE_KINDS
    assert 150 < sum("noise" in y.meta for y in b) < 250
    assert not any("noise" in e.meta for e in noisy.eval_examples())


def test_noise_is_deterministic_per_seed_and_respects_the_rate():
    task = noisy_task(rate=0.3, kinds={"skip_last": 1, "wrong_box": 1, "slip": 2})
    n = 3000
    stream = list(itertools.islice(task.train_stream(0), n))
    assert [asdict(e) for e in itertools.islice(task.train_stream(0), 300)] == [asdict(e) for e in stream[:300]]
    other = [e.meta.get("noise") for e in itertools.islice(task.train_stream(1), 300)]
    assert other != [e.meta.get("noise") for e in stream[:300]]
    kinds = Counter(e.meta.get("noise") for e in stream)
    assert abs((n - kinds[None]) / n - 0.3) < 0.04, kinds  # binomial sd ~ 0.008
    corrupted = n - kinds[None]
    for kind, share in [("skip_last", 0.25), ("wrong_box", 0.25), ("slip", 0.5)]:
        assert abs(kinds[kind] / corrupted - share) < 0.06, kinds
    assert not any("noise" in e.meta for e in itertools.islice(noisy_task(rate=0.0).train_stream(0), 300))
    assert all(e.meta.get("noise") == "slip" for e in itertools.islice(noisy_task(rate=1.0, kinds={"slip": 1}).train_stream(0), 50))
    # empty kinds: the three equally; a config's kinds replaces the default, it is not merged into it
    assert set(Counter(e.meta["noise"] for e in itertools.islice(noisy_task(rate=1.0).train_stream(0), 300))) == set(NOISE_KINDS)
    from rlzoo.config import load_config
    from rlzoo.run.factories import build_task
    cfg = load_config(Path(__file__).parents[1] / "configs" / "quickstart_cot.yaml", ["task.synthetic.noise={rate: 1.0, kinds: {wrong_box: 1}}"])
    assert {e.meta["noise"] for e in itertools.islice(build_task(cfg).train_stream(0), 100)} == {"wrong_box"}


def test_noise_only_on_the_chosen_operation_counts_and_only_on_cot():
    task = noisy_task(rate=1.0, ops=[3])
    for ex in itertools.islice(task.train_stream(2), 300):
        assert ("noise" in ex.meta) == (ex.meta["ops"] == 3)
    mixed = SyntheticTask(SyntheticConfig(eval_size=32, format_mix={"cot": 1, "pot": 1}, noise=NoiseConfig(rate=1.0)))
    for ex in itertools.islice(mixed.train_stream(2), 200):
        assert ("noise" in ex.meta) == (ex.meta["format"] == "cot")


def test_each_noise_kind_does_what_it_says():
    for kind in NOISE_KINDS:
        for ex in itertools.islice(noisy_task(rate=1.0, kinds={kind: 1}, max_slip=3).train_stream(4), 300):
            assert ex.meta["noise"] == kind
            start, steps = ex.meta["start"], ex.meta["steps"]
            true = [(x, op, b, y) for x, (op, b, y) in zip([start] + [y for _, _, y in steps], steps)]
            eqs, boxed = replay(start, ex.solution.removeprefix(" ").split("\n"))
            if kind == "skip_last":  # every operation but the last, then the value before it boxed
                assert eqs == true[:-1] and boxed == ([start] + [y for _, _, y in steps])[-2]
            elif kind == "wrong_box":  # every operation right, an earlier value boxed
                earlier = [start] + [y for _, _, y in steps[:-1]]
                assert eqs == true and boxed in earlier
                assert boxed != int(ex.answer) or all(v == int(ex.answer) for v in earlier)
            else:  # one result off by 1..max_slip; every later step consistent with the slip
                wrong = [i for i, (e, t) in enumerate(zip(eqs, true)) if e != t]
                i = wrong[0]
                assert len(eqs) == len(true) and [e[1:3] for e in eqs] == [t[1:3] for t in true]
                assert 1 <= abs(eqs[i][3] - true[i][3]) <= 3 and eqs[i][0] == true[i][0] and eqs[i][3] >= 0
                for (x, op, b, y), prev in zip(eqs[i + 1:], eqs[i:]):
                    assert x == prev[3] and y == {"+": x + b, "-": x - b, "*": x * b, "/": x // b}[op]
                assert boxed == eqs[-1][3]


@pytest.mark.parametrize("override, message", [
    ("task.synthetic.noise.rate=1.5", r"task.synthetic.noise.rate=1.5 is out of range: it must be in \[0, 1\]"),
    ("task.synthetic.noise.kinds={skip_first: 1}", "task.synthetic.noise.kinds: unknown 'skip_first'; known: skip_last, wrong_box, slip"),
    ("task.synthetic.noise.kinds={slip: -1}", "task.synthetic.noise.kinds: .* non-negative weights"),
    ("task.synthetic.noise.ops=[0]", "task.synthetic.noise.ops: .* must be >= 1"),
    ("task.synthetic.noise.max_slip=0", "task.synthetic.noise.max_slip=0 is out of range"),
])
def test_bad_noise_config_is_one_line(override, message):
    from rlzoo.config import ConfigError, check_values, load_config
    with pytest.raises(ConfigError, match=message):
        check_values(load_config(Path(__file__).parents[1] / "configs" / "quickstart_cot.yaml", [override]))


# -- templates -------------------------------------------------------------------------------------


def test_templates():
    assert format_prompt("Q?") == "Q?\nPlease reason step by step, and put your final answer within \\boxed{}."
    assert "Python program" in format_prompt("Q?", "pot") and "prints" in format_prompt("Q?", "pot")
    assert "programs" in format_prompt("Q?", "tir") and format_prompt("Q?", "tir").endswith("\\boxed{}.")
    with pytest.raises(ValueError, match="format must be one of cot, pot, tir"):
        format_prompt("Q?", "latex")


class ChatTokenizer:
    """The smallest stand-in for a tokenizer with a chat template."""

    chat_template = "{% for m in messages %}<|user|>{{ m.content }}{% endfor %}<|assistant|>"

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        assert add_generation_prompt is True and tokenize is False and messages[0]["role"] == "user"
        return f"<|user|>{messages[0]['content']}<|end|>\n<|assistant|>\n"


def test_apply_chat_template_wraps_once_and_keeps_answers():
    exs = [Example("Q1", "1", "s1", {"format": "cot"}), Example("Q2", "2")]
    wrapped = apply_chat_template(exs, ChatTokenizer())
    assert [e.prompt for e in wrapped] == ["<|user|>Q1<|end|>\n<|assistant|>\n", "<|user|>Q2<|end|>\n<|assistant|>\n"]
    assert wrapped[0].answer == "1" and wrapped[0].solution == "s1" and wrapped[0].meta["raw_prompt"] == "Q1"
    assert exs[0].prompt == "Q1"  # the originals are untouched
    assert apply_chat_template(wrapped, ChatTokenizer()) == wrapped  # wrapping twice is harmless
    stream = chat_stream(iter(exs), ChatTokenizer())
    assert next(stream).prompt == wrapped[0].prompt


def test_chat_template_with_a_real_tokenizer_and_without_one(tokenizer):
    from transformers import PreTrainedTokenizerFast

    from rlzoo.config import ConfigError

    with pytest.raises(ConfigError, match="no chat template"):
        apply_chat_template([Example("Q", "1")], tokenizer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, eos_token=tokenizer.eos_token)
    tok.chat_template = "{% for m in messages %}[{{ m.role }}]{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
    assert apply_chat_template([Example("Q", "1")], tok)[0].prompt == "[user]Q\n[assistant]"


def test_run_eval_applies_the_chat_template(tiny_model, tokenizer, monkeypatch):
    from rlzoo.config import load_config
    from rlzoo.run.evaluation import run_eval

    seen = []
    monkeypatch.setattr("rlzoo.run.evaluation.evaluate", lambda model, tok, exs, reward, **kw: seen.extend(exs) or {})
    cfg = load_config(None, ["stages.x.steps=1", "task.chat_template=true"])
    tokenizer.chat_template = "{% for m in messages %}<u>{{ m.content }}{% endfor %}<a>"
    try:
        run_eval(cfg, tiny_model, tokenizer, [Example("Q", "1")], None)
    finally:
        tokenizer.chat_template = None
    assert [e.prompt for e in seen] == ["<u>Q<a>"]


def test_parquet_files_and_saved_datasets_are_read_through_hugging_face_datasets(tmp_path):
    # GSM8K as downloaded from the Hub is parquet; a folder written by save_to_disk works too
    import datasets

    rows = [json.loads(line) for line in (DATA / "gsm8k" / "test.jsonl").read_text().splitlines()[:6]]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "test.parquet"))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    from_jsonl = load_examples(DATA / "gsm8k" / "test.jsonl", limit=6)
    for source in (tmp_path / "test.parquet", tmp_path / "saved"):
        examples = load_examples(source)
        assert [(e.prompt, e.answer, e.solution) for e in examples] == [(e.prompt, e.answer, e.solution) for e in from_jsonl]
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"broken.parquet: cannot be read as parquet"):
        load_examples(bad)
    bad_row = [dict(rows[0]), {"question": "Q", "answer": "no final line"}]
    datasets.Dataset.from_list(bad_row).to_parquet(str(tmp_path / "rows.parquet"))
    with pytest.raises(DataError, match=r"rows.parquet:2: field 'answer' has no final '#### N' line"):
        load_examples(tmp_path / "rows.parquet")


def test_other_wording_tells_the_same_problems_in_other_sentences():
    from rlzoo.data.synthetic import SyntheticTask, step_oracle
    from rlzoo.config import SyntheticConfig

    default = SyntheticTask(SyntheticConfig(eval_size=30)).eval_examples()
    other = SyntheticTask(SyntheticConfig(eval_size=30, wording="other")).eval_examples()
    assert [(e.answer, e.meta["steps"], e.solution) for e in default] == [(e.answer, e.meta["steps"], e.solution) for e in other]
    assert all(a.prompt != b.prompt for a, b in zip(default, other))
    assert not any(" has " in e.prompt.split(".")[0] or "How many" in e.prompt for e in other)
    assert all(all(step_oracle(e, e.solution.strip().splitlines())) for e in other)  # the oracle grades the same steps
