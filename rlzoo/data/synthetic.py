"""The embedded default task: arithmetic word problems generated on the fly.

Each problem starts with a quantity and applies one to three operations, each phrased as a short
sentence; the answer is a non-negative integer. Every problem carries two reference solutions:

* chain-of-thought: one line per operation, then ``The answer is \\boxed{N}.``
* program-of-thought: a short Python program whose printed output is N.

Difficulty is set by :class:`SyntheticConfig` (operand range, number of operations, which
operators). The held-out evaluation set is a fixed list drawn from its own seed; training
problems that happen to equal an evaluation problem are skipped, so the two never overlap.

>>> task = SyntheticTask(SyntheticConfig())
>>> ex = task.eval_examples()[0]
>>> ex.solution.endswith("}.") and ex.answer.isdigit()
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterator

from rlzoo.interface import Example

NAMES = ["Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jo", "Kim", "Leo", "Mia", "Ned", "Ola", "Pam"]
ITEMS = ["apples", "books", "coins", "stamps", "shells", "cards", "marbles", "pens", "cookies", "stickers"]
ADD = ["{who} buys {b} more {item}.", "{who} finds {b} more {item}.", "{who} gets {b} more {item} from a friend."]
SUB = ["{who} gives away {b} {item}.", "{who} loses {b} {item}.", "{who} sells {b} {item}."]
MUL = ["{who} ends up with {b} times as many {item}.", "The number of {item} grows {b} times."]
DIV = ["{who} splits the {item} into {b} equal piles and keeps one pile."]

PROMPT_SUFFIX = {
    "cot": "",
    "pot": " Write a Python program that prints the answer.",
}


@dataclass
class SyntheticConfig:
    """Difficulty and size of the embedded task."""

    min_ops: int = 1  # fewest operations per problem
    max_ops: int = 3  # most operations per problem
    max_operand: int = 10  # operands are drawn from 1..max_operand (the start from 1..2*max_operand)
    max_value: int = 100  # every intermediate and final value stays in 0..max_value
    operators: str = "+-*/"  # allowed operators, a subset of "+-*/"
    eval_size: int = 200  # size of the fixed held-out set
    eval_seed: int = 12345  # seed of the held-out set (never used for training)
    format: str = "cot"  # solution format: "cot" (chain-of-thought) or "pot" (program-of-thought)


class SyntheticTask:
    """Generator of problems; ``train_stream(seed)`` never yields a held-out problem."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        if cfg.format not in PROMPT_SUFFIX:
            raise ValueError(f"task.format must be one of {sorted(PROMPT_SUFFIX)}, got '{cfg.format}'")
        bad = set(cfg.operators) - set("+-*/")
        if bad or not cfg.operators:
            raise ValueError(f"task.operators must be a non-empty subset of '+-*/', got '{cfg.operators}'")
        if not 1 <= cfg.min_ops <= cfg.max_ops:
            raise ValueError("task.min_ops and task.max_ops need 1 <= min_ops <= max_ops")
        self.cfg = cfg
        self._eval = self._draw(random.Random(cfg.eval_seed), cfg.eval_size, exclude=set())
        self._eval_prompts = {ex.prompt for ex in self._eval}

    def eval_examples(self) -> list[Example]:
        return list(self._eval)

    def train_stream(self, seed: int) -> Iterator[Example]:
        """An endless stream of training problems, disjoint from the held-out set."""
        rng = random.Random(seed)
        while True:
            yield self._draw(rng, 1, exclude=self._eval_prompts)[0]

    def corpus(self, n: int = 2000, seed: int = 0) -> list[str]:
        """Texts in every format, to train the tokenizer on."""
        rng = random.Random(seed)
        texts = []
        for _ in range(n):
            steps, start = self._steps(rng)
            for fmt in PROMPT_SUFFIX:
                ex = self._example(steps, start, fmt)
                texts.append(ex.prompt + ex.solution)
        return texts

    # -- generation ---------------------------------------------------------------------------

    def _draw(self, rng: random.Random, n: int, exclude: set[str]) -> list[Example]:
        out: list[Example] = []
        seen = set(exclude)
        while len(out) < n:
            steps, start = self._steps(rng)
            ex = self._example(steps, start, self.cfg.format)
            if ex.prompt not in seen:
                seen.add(ex.prompt)
                out.append(ex)
        return out

    def _steps(self, rng: random.Random) -> tuple[list[tuple], dict]:
        cfg = self.cfg
        start = {"who": rng.choice(NAMES), "item": rng.choice(ITEMS), "a": rng.randint(1, 2 * cfg.max_operand)}
        while True:
            value, steps = start["a"], []
            for _ in range(rng.randint(cfg.min_ops, cfg.max_ops)):
                step = self._op(rng, value)
                if step is None:
                    break
                steps.append(step)
                value = step[3]
            else:
                return steps, start

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
                template = rng.choice({"+": ADD, "-": SUB, "*": MUL, "/": DIV}[op])
                return op, b, template, y
        return None

    @staticmethod
    def _example(steps: list[tuple], start: dict, fmt: str) -> Example:
        who, item = start["who"], start["item"]
        sentences = [f"{who} has {start['a']} {item}."]
        cot_lines, pot_lines = [], [f"x = {start['a']}"]
        x = start["a"]
        for op, b, template, y in steps:
            sentences.append(template.format(who=who, b=b, item=item))
            sym = {"+": "+", "-": "-", "*": "*", "/": "/"}[op]
            cot_lines.append(f"{x} {sym} {b} = {y}.")
            pot_lines.append(f"x = x {sym if op != '/' else '//'} {b}")
            x = y
        sentences.append(f"How many {item} does {who} have now?")
        prompt = "Question: " + " ".join(sentences) + PROMPT_SUFFIX[fmt] + "\nAnswer:"
        if fmt == "cot":
            solution = " " + " ".join(cot_lines) + f" The answer is \\boxed{{{x}}}."
        else:
            solution = "\n```python\n" + "\n".join(pot_lines) + "\nprint(x)\n```"
        return Example(prompt=prompt, answer=str(x), solution=solution, meta={"format": fmt, "ops": len(steps)})
