"""Decoding settings and the per-sample seed that makes a resumed run draw the same samples.

Each sample (benchmark, problem id, sample index) gets its own seed derived from the run seed, and both backends
sample each request from its own random stream. A sample's randomness therefore does not depend on which other
samples shared its batch, or on whether the run was interrupted before it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

from mhpo_verl.eval.errors import EvalInputError


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 0
    """0 (or -1) turns top-k filtering off."""
    max_new_tokens: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:  # also rejects NaN
            raise EvalInputError(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise EvalInputError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < -1:
            raise EvalInputError(f"--top-k must be >= 1, or 0/-1 for no top-k filtering, got {self.top_k}")
        if self.max_new_tokens < 1:
            raise EvalInputError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def as_dict(self) -> dict:
        return asdict(self)


def sample_seed(run_seed: int, benchmark: str, problem_id: str, sample_idx: int) -> int:
    """A stable 63-bit seed per sample (Python's ``hash`` is salted per process, so it cannot be used)."""
    digest = hashlib.sha256(f"{run_seed}\x1f{benchmark}\x1f{problem_id}\x1f{sample_idx}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
