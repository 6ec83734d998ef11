"""A reward that a random character-level policy earns in varying amounts: the fraction of digits in the reply.

The project's grader gives such a policy 0 for every reply, so every advantage, and the update, would be 0; with
this reward the groups differ and the update is a real one. verl loads it by file path
(``reward.custom_reward_function.path``), in its reward workers on any node of the machine.
"""

from __future__ import annotations

from typing import Any


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: Any = None, **_: Any) -> float:
    return sum(character.isdigit() for character in solution_str) / max(len(solution_str), 1)
