"""The embedded default task: arithmetic word problems generated on the fly.

Each problem starts with a quantity and applies one to three operations, each phrased as a short
sentence; the answer is a non-negative integer. A problem can be written in the three solution
formats of DeepSeekMath's instruction-tuning data (docs/data.md shows one of each):

* ``cot`` chain-of-thought: one line per operation, then ``The answer is \\boxed{N}.``
* ``pot`` program-of-thought: a short Python program whose printed output is N.
* ``tir`` tool-integrated: a sentence of reasoning, a Python block, its ```` ```output ```` block
  (what the program prints), then ``The answer is \\boxed{N}.``

``Example.meta`` records the problem itself: ``start`` (the starting quantity), ``steps`` (one
``(op, b, result)`` per operation) and ``ops`` (their number). :func:`step_oracle` grades each step
of a chain-of-thought completion exactly against it: the labels a process reward model learns
to predict, and the yardstick its predictions are measured with.

The prompt says which format is wanted (:data:`PROMPT_SUFFIX`). Training data is in one format
(``format``) or a mix drawn per problem by weight (``format_mix``); the choice of format never
changes which problems are drawn. With ``format_hint: false`` every prompt is the bare question,
so a model trained on a mix chooses its format itself (and RL can change that choice).

Imperfect demonstrations (``noise``, :class:`~rlzoo.config.NoiseConfig`): a share ``rate`` of the
training chain-of-thought solutions is corrupted by :func:`corrupt`, so SFT learns wrong habits
as it would from real instruction data and RL has something to unlearn. ``skip_last`` drops the
last operation and boxes the value before it; ``wrong_box`` does every operation but boxes an
earlier value; ``slip`` gets one step's result off by 1..``max_slip`` and carries the slip
through the later steps. The example's ``answer`` and ``meta["steps"]`` stay the true ones (the
reward and the step oracle grade against them) and ``meta["noise"]`` names the corruption. The
noise is drawn from its own generator seeded by the stream's seed, so it never changes which
problems are drawn; held-out problems and the tokenizer's corpus are never corrupted.

Difficulty is set by :class:`SyntheticConfig` (operand range, number of operations, which
operators). ``wording: other`` tells the same problems (the same seed draws the same numbers and
operations) in other sentences (:data:`WORDINGS`), for a held-out set in words no stage trained on. The held-out evaluation set is a fixed list drawn from its own seed, in one format
(``eval_format``); training problems whose question equals an evaluation question (in any format)
are skipped, so the two never overlap.

>>> task = SyntheticTask(SyntheticConfig())
>>> ex = task.eval_examples()[0]
>>> ex.solution.endswith("}.") and ex.answer.isdigit()
True
"""

from __future__ import annotations

import random
import re
from typing import Callable, Iterator

from rlzoo.config import NOISE_KINDS, NoiseConfig, SyntheticConfig
from rlzoo.errors import ConfigError
from rlzoo.interface import Example

NAMES = ["Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jo", "Kim", "Leo", "Mia", "Ned", "Ola", "Pam"]
ITEMS = ["apples", "books", "coins", "stamps", "shells", "cards", "marbles", "pens", "cookies", "stickers"]
ADD = ["{who} buys {b} more {item}.", "{who} finds {b} more {item}.", "{who} gets {b} more {item} from a friend."]
SUB = ["{who} gives away {b} {item}.", "{who} loses {b} {item}.", "{who} sells {b} {item}."]
MUL = ["{who} ends up with {b} times as many {item}.", "The number of {item} grows {b} times."]
DIV = ["{who} splits the {item} into {b} equal piles and keeps one pile."]
WORDINGS = {  # task.synthetic.wording: the same problems (each list as long as its counterpart) told in other words
    "default": {"start": "{who} has {a} {item}.", "+": ADD, "-": SUB, "*": MUL, "/": DIV,
                "ask": "How many {item} does {who} have now?"},
    "other": {"start": "At first, {who} owns {a} {item}.",
              "+": ["Then {who} receives another {b} {item}.", "{b} extra {item} come to {who}.", "A neighbour hands {who} {b} {item}."],
              "-": ["{who} uses up {b} of the {item}.", "{b} {item} go missing.", "{who} trades away {b} {item}."],
              "*": ["The pile of {item} becomes {b} times bigger.", "{who} multiplies the {item} by {b}."],
              "/": ["{who} shares the {item} fairly among {b} friends and keeps a single share."],
              "ask": "What number of {item} does {who} hold at the end?"},
}

PROMPT_SUFFIX = {  # appended to the question; says which solution format is wanted
    "cot": "",
    "pot": " Write a Python program that prints the answer.",
    "tir": " Reason with Python code and its output, then give the answer.",
}
MAX_DRAWS = 20_000  # draws in a row without a new problem after which the settings are an error, not a hang
LEGACY_CORPUS_FORMATS = ("cot", "pot")  # always in corpus(); tir joins when the task uses it


def question_key(prompt: str) -> str:
    """The question of a synthetic prompt without its format hint: equal across cot, pot and tir.

    Compare held-out and training problems with it when their formats may differ.

    >>> question_key("Question: Ann has 2 pens. How many pens does Ann have now? Write a Python program that prints the answer.\\nAnswer:")
    'Ann has 2 pens. How many pens does Ann have now?'
    """
    question = prompt.removeprefix("Question: ").removesuffix("\nAnswer:")
    for suffix in PROMPT_SUFFIX.values():
        if suffix and question.endswith(suffix):
            return question[: -len(suffix)]
    return question




_EQUATION_STEP = re.compile(r"(-?\d+)\s*([-+*/])\s*(-?\d+)\s*=\s*(-?\d+)\s*\.?")
_ANSWER_STEP = re.compile(r"The answer is \\boxed\{\s*(-?\d+)\s*\}\s*\.?")


def step_oracle(example: Example, steps: list[str]) -> list[bool]:
    """Whether each step of a chain-of-thought completion is correct, graded exactly.

    ``steps`` are the completion's step texts, as a step rule splits them
    (:func:`rlzoo.reward_models.steps.split_steps`; ``line`` and ``sentence`` give the task's
    one-equation steps). Walking the problem in ``example.meta``
    (``start``, ``steps``) with a running value v (at first ``start``):

    * an equation step ``x op b = y.`` is correct iff it is the problem's next operation applied
      to v: x = v, op and b are the next operation's, y is its true result (then v = y);
    * the answer step ``The answer is \\boxed{a}.`` is correct iff every operation was done and
      a = v, the true answer; nothing after it is correct;
    * any other step is wrong.

    Spaces around numbers and symbols and the final period are optional; the numbers are not.

    Once a step is wrong every later step is wrong too, whatever it says: a step's label means
    "the solution so far is still on a correct path", which is what a process reward model
    trained on Math-Shepherd labels estimates (the chance that a correct answer can still be
    reached from this prefix) and what first-error benchmarks (PRM800K, ProcessBench) grade.
    So a correct equation after a wrong one, e.g. a right product of a wrong difference, is
    labelled wrong. The first wrong step is the first False
    (:func:`rlzoo.reward_models.steps.first_error`).

    >>> ex = Example("Q", "6", meta={"start": 8, "steps": [("-", 6, 2), ("*", 3, 6)], "ops": 2})
    >>> step_oracle(ex, ["8 - 6 = 2.", "2 * 3 = 6.", "The answer is \\\\boxed{6}."])
    [True, True, True]
    >>> step_oracle(ex, ["8 - 6 = 3.", "3 * 3 = 9.", "The answer is \\\\boxed{9}."])  # wrong from the first step
    [False, False, False]
    >>> step_oracle(ex, ["8 - 6 = 2.", "The answer is \\\\boxed{2}."])  # an operation skipped
    [True, False]
    """
    if "start" not in example.meta or "steps" not in example.meta:
        raise ValueError("step_oracle needs a synthetic example (meta['start'] and meta['steps'])")
    value, todo = example.meta["start"], list(example.meta["steps"])
    labels, on_path, answered = [], True, False
    for step in steps:
        equation, answer = _EQUATION_STEP.fullmatch(step), _ANSWER_STEP.fullmatch(step)
        if not on_path or answered:
            on_path = False
        elif equation and todo:
            x, op, b, y = int(equation[1]), equation[2], int(equation[3]), int(equation[4])
            next_op, next_b, result = todo[0]
            on_path = (x, op, b, y) == (value, next_op, next_b, result)
            if on_path:
                value, todo = result, todo[1:]
        elif answer:
            on_path, answered = not todo and int(answer[1]) == value, True
        else:
            on_path = False
        labels.append(on_path)
    return labels


def _cot_solution(start: int, steps: list[tuple[str, int, int]], boxed: int) -> str:
    """A chain-of-thought solution: one ``x op b = y.`` line per step, then ``boxed`` as the answer."""
    lines, x = [], start
    for op, b, y in steps:
        lines.append(f"{x} {op} {b} = {y}.")
        x = y
    return " " + "\n".join(lines + [f"The answer is \\boxed{{{boxed}}}."])


def _apply(op: str, x: int, b: int) -> int:
    return {"+": x + b, "-": x - b, "*": x * b, "/": x // b}[op]


def corrupt(example: Example, kind: str, rng: random.Random, max_slip: int = 2) -> Example:
    """``example`` (chain-of-thought) with its solution corrupted by ``kind``; ``answer`` and
    ``meta["steps"]`` stay true, ``meta["noise"]`` is ``kind``.

    * ``skip_last``: the last operation is left out and the value before it is boxed;
    * ``wrong_box``: every operation is done, then an earlier value (the start or an intermediate
      result, one that differs from the answer where there is one) is boxed;
    * ``slip``: one step's result (drawn uniformly) is off by 1..``max_slip`` (never below 0), and
      every later step is computed from the slipped value (division rounding down), so the lines
      are consistent with the slip and the boxed value is usually wrong.

    >>> ex = Example("Q", "6", solution="", meta={"start": 8, "steps": [("-", 6, 2), ("*", 3, 6)], "ops": 2})
    >>> print(corrupt(ex, "skip_last", random.Random(0)).solution)
     8 - 6 = 2.
    The answer is \\boxed{2}.
    >>> print(corrupt(ex, "wrong_box", random.Random(0)).solution)
     8 - 6 = 2.
    2 * 3 = 6.
    The answer is \\boxed{2}.
    """
    start, steps = example.meta["start"], [tuple(s) for s in example.meta["steps"]]
    values = [start] + [y for _, _, y in steps]  # the value before each step, then the answer
    if kind == "skip_last":
        solution = _cot_solution(start, steps[:-1], values[-2])
    elif kind == "wrong_box":
        earlier = [v for v in values[:-1] if v != values[-1]] or values[:-1]
        solution = _cot_solution(start, steps, rng.choice(earlier))
    elif kind == "slip":
        i = rng.randrange(len(steps))
        delta = rng.randint(1, max_slip)
        y = steps[i][2] + delta if rng.random() < 0.5 or steps[i][2] - delta < 0 else steps[i][2] - delta
        slipped, x = list(steps[:i]) + [(steps[i][0], steps[i][1], y)], y
        for op, b, _ in steps[i + 1:]:
            x = _apply(op, x, b)
            slipped.append((op, b, x))
        solution = _cot_solution(start, slipped, x)
    else:
        raise ValueError(f"task.synthetic.noise.kinds: unknown '{kind}'; known: {', '.join(NOISE_KINDS)}")
    return Example(prompt=example.prompt, answer=example.answer, solution=solution, meta={**example.meta, "noise": kind})


class SyntheticTask:
    """Generator of problems; ``train_stream(seed)`` never yields a held-out problem."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        for what, fmt in [("task.synthetic.format", cfg.format), ("task.synthetic.eval_format", cfg.eval_format)] + [
            ("task.synthetic.format_mix", f) for f in cfg.format_mix
        ]:
            if fmt is not None and fmt not in PROMPT_SUFFIX:
                raise ValueError(f"{what} must be one of {', '.join(PROMPT_SUFFIX)}; got '{fmt}'")
        if cfg.format_mix and (any(w < 0 for w in cfg.format_mix.values()) or sum(cfg.format_mix.values()) <= 0):
            raise ValueError("task.synthetic.format_mix needs non-negative weights with a positive sum")
        bad = set(cfg.operators) - set("+-*/")
        if bad or not cfg.operators:
            raise ValueError(f"task.synthetic.operators must be a non-empty subset of '+-*/', got '{cfg.operators}'")
        if not 1 <= cfg.min_ops <= cfg.max_ops:
            raise ValueError("task.synthetic.min_ops and max_ops need 1 <= min_ops <= max_ops")
        if cfg.ops_weights is not None and (
            len(cfg.ops_weights) != cfg.max_ops - cfg.min_ops + 1 or min(cfg.ops_weights) < 0 or sum(cfg.ops_weights) <= 0
        ):
            raise ValueError("task.synthetic.ops_weights needs one non-negative weight per operation count min_ops..max_ops")
        noise = cfg.noise if isinstance(cfg.noise, NoiseConfig) else NoiseConfig(**cfg.noise)
        if not 0 <= noise.rate <= 1 or (set(noise.kinds) - set(NOISE_KINDS)) or any(w < 0 for w in noise.kinds.values()) or (
            noise.kinds and sum(noise.kinds.values()) <= 0
        ):
            raise ValueError(f"task.synthetic.noise needs rate in [0, 1] and non-negative weights of {', '.join(NOISE_KINDS)}")
        self.noise = noise
        self.cfg = cfg
        self.eval_format = cfg.eval_format or cfg.format
        # training formats and their weights (one format with weight 1 without a mix)
        mix = {f: float(w) for f, w in cfg.format_mix.items() if w > 0} or {cfg.format: 1.0}
        self.formats, self.weights = list(mix), list(mix.values())
        self._eval, self._eval_questions = self._draw(random.Random(cfg.eval_seed), cfg.eval_size, exclude=set())

    def _prompt(self, question: str, fmt: str) -> str:
        return "Question: " + question + (PROMPT_SUFFIX[fmt] if self.cfg.format_hint else "") + "\nAnswer:"

    def eval_examples(self) -> list[Example]:
        return list(self._eval)

    def train_stream(self, seed: int) -> Iterator[Example]:
        """An endless stream of training problems, disjoint from the held-out set.

        Problems come from ``random.Random(seed)``; with several formats each problem's format is
        drawn by weight from a second generator of the same seed, so the problems themselves do
        not depend on the mix.
        """
        rng = random.Random(seed)
        pick = random.Random(f"format-mix/{seed}") if len(self.formats) > 1 else None
        noise = self.noise
        noisy = random.Random(f"noise/{seed}") if noise.rate > 0 else None
        weights = dict(noise.kinds) or {k: 1.0 for k in NOISE_KINDS}  # empty: the three kinds equally
        kinds = [k for k, w in weights.items() if w > 0]
        while True:
            fmt = pick.choices(self.formats, self.weights)[0] if pick else self.formats[0]
            ex = self._draw(rng, 1, exclude=self._eval_questions, fmt=fmt)[0][0]
            # one uniform draw per problem, whatever its format, so the noise of problem i never
            # depends on the formats or operation counts of the problems before it
            if noisy is not None and noisy.random() < noise.rate and fmt == "cot" and (not noise.ops or ex.meta["ops"] in noise.ops):
                kind = noisy.choices(kinds, [weights[k] for k in kinds])[0]
                ex = corrupt(ex, kind, random.Random(f"noise/{seed}/{noisy.random()}"), noise.max_slip)
            yield ex

    def corpus(self, n: int = 2000, seed: int = 0) -> list[str]:
        """Texts (prompt + solution) in every format the task uses, to train the tokenizer on.

        Chain-of-thought and program-of-thought are always in (the corpus of the default task is
        unchanged since before ``tir`` existed, so its tokenizer is too); ``tir`` is added when the
        training mix or the held-out set uses it.
        """
        used = set(self.formats) | {self.eval_format}
        formats = [f for f in PROMPT_SUFFIX if f in LEGACY_CORPUS_FORMATS or f in used]
        rng = random.Random(seed)
        texts = []
        for _ in range(n):
            steps, start = self._steps(rng)
            for fmt in formats:
                _, ex = self._example(steps, start, fmt, self._prompt)
                texts.append(ex.prompt + ex.solution)
        return texts

    # -- generation ---------------------------------------------------------------------------

    def _draw(self, rng: random.Random, n: int, exclude: set[str], fmt: str | None = None) -> tuple[list[Example], set[str]]:
        """``n`` problems with distinct questions not in ``exclude``, and their questions."""
        out: list[Example] = []
        seen = set(exclude)
        misses = 0  # draws in a row that gave a question already taken
        while len(out) < n:
            steps, start = self._steps(rng)
            question, ex = self._example(steps, start, fmt or self.eval_format, self._prompt)
            if question not in seen:
                seen.add(question)
                out.append(ex)
                misses = 0
            elif (misses := misses + 1) > MAX_DRAWS:
                raise ConfigError(f"task.synthetic: these settings allow too few distinct problems ({len(seen)} found, "
                                  f"eval_size {self.cfg.eval_size} of them held out): raise max_operand, max_value or max_ops")
        return out, seen - exclude

    def _steps(self, rng: random.Random) -> tuple[list[tuple], dict]:
        cfg = self.cfg
        start = {"who": rng.choice(NAMES), "item": rng.choice(ITEMS), "a": rng.randint(1, 2 * cfg.max_operand)}
        for _ in range(MAX_DRAWS):
            value, steps = start["a"], []
            for _ in range(self._num_ops(rng)):
                step = self._op(rng, value)
                if step is None:
                    break
                steps.append(step)
                value = step[3]
            else:
                return steps, start
        raise ConfigError(f"task.synthetic: settings too tight (operators '{cfg.operators}', max_operand {cfg.max_operand}, "
                          f"max_value {cfg.max_value}): no operation on a start of {start['a']} stays in 0..max_value")

    def _num_ops(self, rng: random.Random) -> int:
        cfg = self.cfg
        if cfg.ops_weights is None:
            return rng.randint(cfg.min_ops, cfg.max_ops)
        return rng.choices(range(cfg.min_ops, cfg.max_ops + 1), weights=cfg.ops_weights)[0]

    def _op(self, rng: random.Random, x: int) -> tuple | None:
        cfg = self.cfg
        for _ in range(20):
            op = rng.choice(cfg.operators)
            b = rng.randint(1, cfg.max_operand)
            if op == "+":
                y = x + b
            elif op == "-":
                y = x - b
            elif op == "*":
                b = rng.randint(2, min(5, max(2, cfg.max_operand)))
                y = x * b
            else:
                divisors = [d for d in range(2, min(cfg.max_operand, x) + 1) if x % d == 0]
                if not divisors:
                    continue
                b = rng.choice(divisors)
                y = x // b
            if 0 <= y <= cfg.max_value:
                template = rng.choice(WORDINGS[cfg.wording][op])
                return op, b, template, y
        return None

    def _example(self, steps: list[tuple], start: dict, fmt: str, make_prompt: Callable[[str, str], str]) -> tuple[str, Example]:
        """(question, example): the problem of ``steps`` asked and solved in format ``fmt``."""
        who, item, words = start["who"], start["item"], WORDINGS[self.cfg.wording]
        sentences = [words["start"].format(who=who, a=start["a"], item=item)]
        cot_lines, pot_lines = [], [f"x = {start['a']}"]
        x = start["a"]
        for op, b, template, y in steps:
            sentences.append(template.format(who=who, b=b, item=item))
            sym = {"+": "+", "-": "-", "*": "*", "/": "/"}[op]
            cot_lines.append(f"{x} {sym} {b} = {y}.")
            pot_lines.append(f"x = x {sym if op != '/' else '//'} {b}")
            x = y
        sentences.append(words["ask"].format(who=who, item=item))
        question = " ".join(sentences)
        prompt = make_prompt(question, fmt)
        program = "```python\n" + "\n".join(pot_lines) + "\nprint(x)\n```"
        if fmt == "cot":
            solution = " " + "\n".join(cot_lines + [f"The answer is \\boxed{{{x}}}."])
        elif fmt == "pot":
            solution = "\n" + program
        else:
            solution = (f" {who} starts with {start['a']} {item}. We apply each change in Python.\n" + program
                        + f"\n```output\n{x}\n```\nThe answer is \\boxed{{{x}}}.")
        return question, Example(prompt=prompt, answer=str(x), solution=solution, meta={
            "format": fmt, "ops": len(steps), "start": start["a"], "steps": [(op, b, y) for op, b, _, y in steps],
        })
