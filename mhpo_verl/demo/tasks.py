"""Offline training tasks for the demo: integer arithmetic and one-step algebra with ``\\boxed{}`` answers.

Each step's problems are a pure function of ``(seed, step)``, so two runs with the same seed (say, two loss modes in
a stability study) train on exactly the same prompts in the same order, whatever else differs between them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

DATA_SOURCE = "arithmetic"
"""``data_source`` of the generated rows; the reward functions grade it with their general math grader."""

INSTRUCTION = "Put the final answer in \\boxed{}."

WORKED_EXAMPLE: tuple[dict[str, str], ...] = (
    {"role": "user", "content": f"What is 6 + 7? {INSTRUCTION}"},
    {"role": "assistant", "content": "6 + 7 = 13, so the answer is \\boxed{13}."},
)
"""A one-shot exchange shown before each question. Without it SmolLM2-135M boxes ~2% of its answers and RL has
almost nothing to reinforce; with it, ~75% (sampling at temperature 1)."""


@dataclass(frozen=True)
class Problem:
    question: str
    answer: str
    kind: str

    @property
    def prompt(self) -> str:
        return f"{self.question} {INSTRUCTION}"

    def messages(self, worked_example: bool = True) -> list[dict[str, str]]:
        """The chat to send: optionally :data:`WORKED_EXAMPLE`, then the question."""
        example = [dict(turn) for turn in WORKED_EXAMPLE] if worked_example else []
        return [*example, {"role": "user", "content": self.prompt}]

    def as_verl_row(self, index: int, split: str = "train", worked_example: bool = True) -> dict[str, Any]:
        """The problem as a row of verl's RL parquet schema."""
        return {
            "data_source": DATA_SOURCE,
            "prompt": self.messages(worked_example),
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": self.answer},
            "extra_info": {"split": split, "index": index, "kind": self.kind},
        }


def _add_1d(rng: random.Random) -> Problem:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return Problem(f"What is {a} + {b}?", str(a + b), "add_1d")


def _sub_1d(rng: random.Random) -> Problem:
    a = rng.randint(2, 18)
    b = rng.randint(1, min(a - 1, 9))
    return Problem(f"What is {a} - {b}?", str(a - b), "sub_1d")


def _add_2d1d(rng: random.Random) -> Problem:
    a, b = rng.randint(10, 40), rng.randint(2, 9)
    return Problem(f"What is {a} + {b}?", str(a + b), "add_2d1d")


def _mul_1d(rng: random.Random) -> Problem:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    return Problem(f"What is {a} * {b}?", str(a * b), "mul_1d")


def _add_2d(rng: random.Random) -> Problem:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return Problem(f"What is {a} + {b}?", str(a + b), "add_2d")


def _sub_2d(rng: random.Random) -> Problem:
    a, b = sorted((rng.randint(10, 99), rng.randint(10, 99)), reverse=True)
    return Problem(f"What is {a} - {b}?", str(a - b), "sub_2d")


def _mul_1d2d(rng: random.Random) -> Problem:
    a, b = rng.randint(2, 9), rng.randint(11, 30)
    return Problem(f"What is {a} * {b}?", str(a * b), "mul_1d2d")


def _linear_equation(rng: random.Random) -> Problem:
    x, a, b = rng.randint(1, 12), rng.randint(2, 9), rng.randint(1, 30)
    return Problem(f"Solve for x: {a}x + {b} = {a * x + b}.", str(x), "linear_equation")


GENERATORS = {
    "add_1d": _add_1d,
    "sub_1d": _sub_1d,
    "add_2d1d": _add_2d1d,
    "mul_1d": _mul_1d,
    "add_2d": _add_2d,
    "sub_2d": _sub_2d,
    "mul_1d2d": _mul_1d2d,
    "linear_equation": _linear_equation,
}
"""Problem kinds by name. First-attempt accuracy of SmolLM2-135M-Instruct with the worked example, sampling at
temperature 1 (40 problems each): add_1d ~60%, add_2d1d ~28%, mul_1d ~65%, add_2d and linear_equation ~2%."""

DEFAULT_KINDS = ("add_1d", "add_2d1d", "mul_1d")
"""The demo's mix: within the model's reach, with room to improve."""


class TaskGenerator:
    """Deterministic stream of problems drawn uniformly from the chosen kinds."""

    def __init__(self, kinds: tuple[str, ...] | list[str] = DEFAULT_KINDS, seed: int = 0):
        unknown = [kind for kind in kinds if kind not in GENERATORS]
        if not kinds or unknown:
            raise ValueError(f"task kinds must be a non-empty subset of {sorted(GENERATORS)}; got {list(kinds)}")
        self.kinds = tuple(kinds)
        self.seed = seed

    def problems(self, step: int, count: int) -> list[Problem]:
        """The ``count`` problems of training step ``step`` (same arguments, same problems)."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        rng = random.Random(f"{self.seed}:{step}")
        return [GENERATORS[rng.choice(self.kinds)](rng) for _ in range(count)]
