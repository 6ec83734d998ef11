"""Which benchmark a parquet row belongs to, and how it is shown in tables.

A file's ``data_source`` column names its benchmark. The data step writes the short names (``math500``,
``aime24``, ...), but files made by verl's own preprocessing or copied from the Hub use longer ones
(``HuggingFaceH4/MATH-500``, ``aime_2024``); both resolve to the same canonical name so that results from
either kind of file land in the same column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mhpo_verl.eval.errors import EvalInputError


@dataclass(frozen=True)
class Benchmark:
    name: str
    """Canonical name: the key in ``summary.json`` and the value of ``benchmark`` in ``samples.jsonl``."""
    display_name: str
    """Column header in the Markdown tables and the plot."""
    aliases: tuple[str, ...] = ()
    """Other spellings of ``data_source`` (compared after :func:`_squash`)."""


# The paper's column order (Table 1: MATH500, HMMT25, AMC23, AIME25, AIME24), then the common extra sets, then the
# vision-language sets of its Qwen2.5-VL setting (:data:`VISION_BENCHMARKS`).
KNOWN_BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("math500", "MATH500", ("huggingfaceh4/math-500", "math-500")),
    Benchmark("hmmt25", "HMMT25", ("hmmt2025", "hmmt_feb_2025", "hmmt-feb-2025", "hmmt_february_2025")),
    Benchmark("amc23", "AMC23", ("amc2023",)),
    Benchmark("aime25", "AIME25", ("aime2025",)),
    Benchmark("aime24", "AIME24", ("aime2024",)),
    Benchmark("gsm8k", "GSM8K", ("openai/gsm8k",)),
    Benchmark("math", "MATH", ("digitallearninggmbh/math-lighteval", "hendrycks_math", "competition_math")),
    Benchmark("mathvista", "MathVista", ("ai4math/mathvista", "mathvista_testmini")),
    Benchmark("mathverse", "MathVerse", ("ai4math/mathverse", "mathverse_testmini")),
    Benchmark("mathvision", "MathVision", ("mathllms/mathvision", "math_vision", "math-vision")),
    Benchmark("geometry3k", "Geometry3K", ("hiyouga/geometry3k", "geo3k")),
)
VISION_BENCHMARKS = ("mathvista", "mathverse", "mathvision", "geometry3k")
"""The VL columns: ``compare`` prints the text and the VL benchmarks as separate tables, each with its own Avg."""

_BY_SQUASHED_NAME: dict[str, Benchmark] = {}
for _benchmark in KNOWN_BENCHMARKS:
    for _spelling in (_benchmark.name, *_benchmark.aliases):
        _BY_SQUASHED_NAME[re.sub(r"[^a-z0-9/]", "", _spelling.lower())] = _benchmark


def _squash(data_source: str) -> str:
    """Lower-case and drop separators, so ``AIME_2024``, ``aime-2024`` and ``aime2024`` compare equal."""
    return re.sub(r"[^a-z0-9/]", "", data_source.strip().lower())


class UnknownBenchmarkError(EvalInputError):
    """A ``data_source`` that names none of the known benchmarks."""


def resolve_benchmark(data_source: str, allow_unknown: bool = False) -> str:
    """Canonical benchmark name for a ``data_source`` value.

    Unknown names are an error unless ``allow_unknown``, in which case the ``data_source`` itself (stripped) is
    the name: a typo in a data file must not silently become a new, one-off column.
    """
    squashed = _squash(data_source)
    benchmark = _BY_SQUASHED_NAME.get(squashed) or _BY_SQUASHED_NAME.get(squashed.rsplit("/", 1)[-1])
    if benchmark is not None:
        return benchmark.name
    if allow_unknown and data_source.strip():
        return data_source.strip()
    known = ", ".join(b.name for b in KNOWN_BENCHMARKS)
    raise UnknownBenchmarkError(
        f"unknown benchmark data_source {data_source!r}; expected one of {known} (or a known alias such as "
        f"'HuggingFaceH4/MATH-500' or 'aime_2024'); pass --allow-unknown-benchmarks to evaluate it under its own name"
    )


def display_name(name: str) -> str:
    """Table header for a canonical name; unknown benchmarks are shown as they were named."""
    for benchmark in KNOWN_BENCHMARKS:
        if benchmark.name == name:
            return benchmark.display_name
    return name


def table_order(names: list[str] | set[str]) -> list[str]:
    """Known benchmarks in the paper's order, then the others in alphabetical order."""
    known = [b.name for b in KNOWN_BENCHMARKS if b.name in names]
    return known + sorted(set(names) - set(known))
