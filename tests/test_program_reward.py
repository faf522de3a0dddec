"""The ``program`` (program-of-thought) and ``tool`` rewards, and parallel scoring in Reward.score_batch."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest
import torch

from rlzoo.interface import Example, RolloutBatch
from rlzoo.rewards.builtin import extract_program, program, tool
from rlzoo.rewards import Reward, RewardFunction, make_reward

FIVE = Example("Q: 2 + 3?", "5")


def block(code: str) -> str:
    return f"\n```python\n{code}\n```"


def batch_of(completions: list[str], examples: list[Example]) -> RolloutBatch:
    n = len(completions)
    return RolloutBatch(
        input_ids=torch.zeros(n, 1, dtype=torch.long), attention_mask=torch.ones(n, 1, dtype=torch.long),
        loss_mask=torch.ones(n, 1), group_ids=torch.arange(n), rewards=torch.full((n,), float("nan")),
        completions=completions, examples=examples,
    )


@pytest.mark.parametrize("code, expected", [
    ("x = 2 + 3\nprint(x)", 1.0),  # prints 5
    ("print(2 * 3)", 0.0),  # prints 6
    ("print('trace', 99)\nprint(5)", 1.0),  # the last non-empty line is graded
    ("print(5)\nprint('the end')", 0.0),
    ("print('The answer is \\\\boxed{5}')", 1.0),  # stdout goes through the verifier's extraction
    ("x = 5", 0.0),  # prints nothing
])
def test_program_output_is_graded(code, expected):
    assert program(FIVE.prompt, "Let me write code." + block(code), FIVE) == expected


@pytest.mark.parametrize("completion", [
    block("x = [1, 2]\nprint(x[5])"),  # IndexError
    block("print(5"),  # SyntaxError
    block("import sys\nprint(5)\nsys.exit(3)"),  # printed the answer, but exited non-zero
])
def test_crashing_program_scores_wrong_and_is_counted(completion):
    from rlzoo.rewards.builtin import reward_events

    before = reward_events().get("exec_fail", 0)
    assert program(FIVE.prompt, completion, FIVE, wrong=-1.0) == -1.0
    assert reward_events()["exec_fail"] == before + 1


@pytest.mark.parametrize("code", ["import time\nprint(5, flush=True)\ntime.sleep(30)", "while True:\n    pass"])
def test_slow_or_endless_program_is_stopped_at_the_timeout(code):
    from rlzoo.rewards.builtin import reward_events

    before = reward_events().get("exec_timeout", 0)
    t0 = time.perf_counter()
    assert program(FIVE.prompt, block(code), FIVE, timeout_s=1.0) == 0.0
    assert time.perf_counter() - t0 < 10  # 1 s limit plus process start-up on a loaded machine
    assert reward_events()["exec_timeout"] == before + 1


def test_no_program_scores_wrong_without_running_unless_bare_code():
    from rlzoo.rewards.builtin import reward_events

    before = reward_events().get("no_program", 0)
    assert program(FIVE.prompt, " 2 + 3 = 5. The answer is \\boxed{5}.", FIVE) == 0.0
    assert reward_events()["no_program"] == before + 1
    assert program(FIVE.prompt, "print(2 + 3)", FIVE) == 0.0
    assert program(FIVE.prompt, "print(2 + 3)", FIVE, bare_code=True) == 1.0


def test_extraction_takes_the_last_block_and_an_unclosed_one_runs_to_the_end():
    text = block("print(1)") + "\nBetter:" + block("print(5)")
    assert extract_program(text) == "print(5)\n"
    assert program(FIVE.prompt, text, FIVE) == 1.0
    assert program(FIVE.prompt, "\n```python\nprint(2 + 3)\n", FIVE) == 1.0  # cut before its fence
    assert extract_program("no code here") is None


def test_hostile_program_is_contained():
    # writing outside the sandbox's work folder fails (read-only mounts / audit hook): the
    # program crashes before it prints, the file does not appear, the caller is unharmed
    target = f"/tmp/rlzoo_program_reward_{uuid.uuid4().hex}"
    code = f"import os\nopen({target!r}, 'w').write('x')\nos.kill(os.getppid(), 9)\nprint(5)"
    assert program(FIVE.prompt, block(code), FIVE) == 0.0
    assert not os.path.exists(target)


def test_tool_reward_reads_the_stated_answer_not_code_or_output():
    out = "\n```output\n5\n```\n"
    assert tool("Q", block("print(2 + 3)") + out + "So the answer is \\boxed{5}.", FIVE) == 1.0
    assert tool("Q", block("print(2 + 3)") + out + "So the answer is \\boxed{6}.", FIVE) == 0.0
    assert tool("Q", block("print(2 + 3)") + out, FIVE) == 0.0  # rule would accept the output block
    assert tool("Q", block("x = 5") + "\nDone.", FIVE) == 0.0  # rule would take the 5 in the code
    from rlzoo.rewards.builtin import rule

    assert rule("Q", block("print(2 + 3)") + out, FIVE) == 1.0


def test_parallel_scoring_keeps_order_and_counts_events():
    # eight different programs; the even ones print their index (= gold), the odd ones print 0;
    # the first ones sleep longest, so they finish last: results must still come out in order
    completions = [block(f"import time\ntime.sleep({0.05 * (8 - i)})\nprint({i if i % 2 == 0 else 0})") for i in range(8)]
    examples = [Example(f"Q{i}", str(i)) for i in range(8)]
    completions.append("no program")
    examples.append(FIVE)
    batch = batch_of(completions, examples)
    metrics = make_reward("program").score_batch(batch)
    assert batch.rewards.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    assert "reward/mean" not in metrics  # the stage takes the mean over every rank's rewards
    assert metrics["reward/no_program_frac"] == pytest.approx(1 / 9)
    assert metrics["reward/exec_fail_frac"] == 0.0 and metrics["reward/exec_timeout_frac"] == 0.0


def test_pool_only_for_rewards_declared_parallel(monkeypatch):
    threads: list[str] = []
    live, peak = [0], [0]
    lock = threading.Lock()

    def slow(prompt, completion, example, *, scale=1.0):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.05 * (5 - int(completion)))
        with lock:
            live[0] -= 1
        threads.append(threading.current_thread().name)
        return scale * float(completion)

    batch = batch_of([str(i) for i in range(5)], [FIVE] * 5)
    Reward([RewardFunction("slow", slow)]).score_batch(batch)  # not declared parallel: a plain loop in this thread
    assert set(threads) == {threading.current_thread().name} and peak[0] == 1
    slow.parallel = True
    Reward([RewardFunction("slow", slow, kwargs={"scale": 2.0})]).score_batch(batch)  # reward.kwargs
    assert batch.rewards.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert peak[0] >= 2


def test_any_format_grades_each_format_by_its_own_rule_and_counts_formats():
    from rlzoo.rewards.builtin import any_format, completion_format

    out = "\n```output\n5\n```\n"
    cases = [
        (" 2 + 3 = 5. The answer is \\boxed{5}.", "cot", 1.0),
        (" 2 + 3 = 6. The answer is \\boxed{6}.", "cot", 0.0),
        (block("x = 2 + 3\nprint(x)"), "pot", 1.0),
        (block("x = 2 * 3\nprint(x)"), "pot", 0.0),  # the 5 is nowhere: graded by running
        (block("y = 5\nprint(y + 1)"), "pot", 0.0),  # rule would take the 1 or the 5 in the code
        (block("print(2 + 3)") + out + "So \\boxed{5}.", "tir", 1.0),
        (block("print(2 + 3)") + out, "tir", 0.0),  # tool: the text must state the answer
        (block("print(1 / 0)"), "pot", 0.0),
    ]
    completions = [c for c, _, _ in cases]
    assert [completion_format(c) for c in completions] == [f for _, f, _ in cases]
    metrics = make_reward("any_format").score_batch(batch := batch_of(completions, [FIVE] * len(cases)))
    assert batch.rewards.tolist() == [r for _, _, r in cases]
    assert metrics["reward/format_cot_frac"] == pytest.approx(2 / 8)
    assert metrics["reward/format_pot_frac"] == pytest.approx(4 / 8)
    assert metrics["reward/format_tir_frac"] == pytest.approx(2 / 8)
    assert metrics["reward/exec_fail_frac"] == pytest.approx(1 / 8)


def test_reward_answers_are_the_answers_each_reward_grades():
    completions = [block("x = 2 + 3\nprint(x)"), " 2 + 3 = 5. The answer is \\boxed{5}.",
                   block("print(7)") + "\n```output\n7\n```\nSo \\boxed{6}.", block("print(1 / 0)")]
    examples = [FIVE] * len(completions)
    assert make_reward("program").answers(examples, completions) == ["5", None, "7", None]
    with_kwargs = make_reward({"name": "program", "kwargs": {"timeout_s": 3.0}})
    assert with_kwargs.answers(examples, completions) == ["5", None, "7", None]
    assert make_reward("tool").answers(examples, completions) == [None, "5", "6", None]
    assert make_reward("any_format").answers(examples, completions) == ["5", "5", "6", None]
    assert make_reward("rule").answers(examples, completions)[:3] == ["3", "5", "6"]  # the text: a program's last number


def test_grades_and_answers_in_one_pass_run_each_program_once(monkeypatch):
    import functools

    import rlzoo.rewards.builtin as builtin
    import rlzoo.sandbox as sandbox

    runs: list[str] = []
    real = sandbox.run_python

    def counted(code, **kw):
        runs.append(code)
        return real(code, **kw)

    monkeypatch.setattr(sandbox, "run_python", counted)
    # a memo of 16 programs, far fewer than the 40 graded: the answer must read the run its grade just made
    monkeypatch.setattr(builtin, "_run_cached", functools.lru_cache(maxsize=16)(builtin._run_cached.__wrapped__))
    completions = [block(f"print({i} + 0)") for i in range(40)]
    examples = [Example(f"Q{i}", str(i if i % 2 else i + 1)) for i in range(40)]
    answers: list = []
    values, _ = make_reward("program").score(examples, completions, answers=answers)
    assert values == [float(i % 2) for i in range(40)]
    assert answers == [str(i) for i in range(40)]
    assert sorted(runs) == sorted(set(runs)) and len(runs) == 40  # the answer reused each fresh run


def test_doctests():
    import doctest

    import rlzoo.rewards.builtin as builtin
    import rlzoo.runtime.tools as tools

    for module in (builtin, tools):
        result = doctest.testmod(module, verbose=False)
        assert result.failed == 0 and result.attempted > 0
