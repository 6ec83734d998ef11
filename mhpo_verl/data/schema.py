"""verl's RL parquet row, built once for every dataset so that files from different datasets can be mixed.

A row is what ``verl.utils.dataset.RLHFDataset`` reads and what the reward manager hands to
``reward_fns.compute_score``::

    data_source   str                              selects the grader (``gsm8k``, ``math500``, ``aime24``, ...)
    prompt        list[{role: str, content: str}]  chat messages; the tokenizer's chat template is applied by verl
    ability       str                              always ``math`` here
    reward_model  {style: str, ground_truth: str}  ``style`` is ``rule``: graded by a function, not a model
    extra_info    {split, index, ...}              carried to the reward function and the logs

Every converter writes the same Arrow schema (:data:`ARROW_SCHEMA`): verl concatenates the train files of a run with
``datasets.concatenate_datasets``, which refuses files whose ``extra_info`` structs differ, so a GSM8K file and a
MATH file must agree field by field even where a field is empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

QUESTION_PLACEHOLDER = "{question}"

DEFAULT_PROMPT_TEMPLATE = "{question}\n\nPlease reason step by step, and put your final answer within \\boxed{}."
"""The user message: the problem, then the instruction to end with a ``\\boxed{}`` answer (Qwen2.5-Math's CoT prompt).

A template is plain text with one ``{question}`` placeholder, filled by string replacement (never ``str.format``:
the LaTeX braces of ``\\boxed{}`` would be read as format fields)."""

ABILITY = "math"
REWARD_STYLE = "rule"

EXTRA_INFO_FIELDS: dict[str, pa.DataType] = {
    "split": pa.string(),
    "index": pa.int64(),
    "source_index": pa.int64(),
    "id": pa.string(),
    "question": pa.string(),
    "reference_solution": pa.string(),
    "subject": pa.string(),
    "level": pa.string(),
    "origin": pa.string(),
}
"""``index``: position in the written file. ``source_index``: row number in the input, so any output row can be traced
back. ``question``: the problem without the template. ``origin``: the hub id or file name it came from. Fields a
dataset lacks are empty strings, never missing."""

ARROW_SCHEMA = pa.schema(
    [
        pa.field("data_source", pa.string(), nullable=False),
        pa.field(
            "prompt",
            pa.list_(pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])),
            nullable=False,
        ),
        pa.field("ability", pa.string(), nullable=False),
        pa.field(
            "reward_model",
            pa.struct([pa.field("style", pa.string()), pa.field("ground_truth", pa.string())]),
            nullable=False,
        ),
        pa.field("extra_info", pa.struct([pa.field(name, kind) for name, kind in EXTRA_INFO_FIELDS.items()])),
    ]
)


class SchemaError(ValueError):
    """A row or a template that does not fit verl's RL parquet schema."""


def check_template(template: str) -> str:
    """Return ``template`` if it holds exactly one ``{question}`` placeholder; raise :class:`SchemaError` otherwise."""
    count = template.count(QUESTION_PLACEHOLDER)
    if count != 1:
        raise SchemaError(
            f"prompt template must contain the placeholder {QUESTION_PLACEHOLDER!r} exactly once, found it {count} "
            f"times in {template!r}"
        )
    return template


def build_prompt(question: str, template: str = DEFAULT_PROMPT_TEMPLATE) -> list[dict[str, str]]:
    """The chat messages for one problem: a single user turn made from ``template``."""
    return [{"role": "user", "content": check_template(template).replace(QUESTION_PLACEHOLDER, question.strip())}]


def make_row(
    *,
    data_source: str,
    question: str,
    ground_truth: str,
    split: str,
    index: int,
    source_index: int,
    template: str = DEFAULT_PROMPT_TEMPLATE,
    extra: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One verl row. ``extra`` fills the optional ``extra_info`` string fields (``id``, ``subject``, ...)."""
    extra = dict(extra or {})
    unknown = set(extra) - set(EXTRA_INFO_FIELDS)
    if unknown:
        raise SchemaError(
            f"unknown extra_info fields {sorted(unknown)}; expected a subset of {list(EXTRA_INFO_FIELDS)}"
        )
    extra_info: dict[str, Any] = {name: "" for name, kind in EXTRA_INFO_FIELDS.items() if kind == pa.string()}
    extra_info.update(extra)
    extra_info.update(split=split, index=index, source_index=source_index, question=question.strip())
    return {
        "data_source": data_source,
        "prompt": build_prompt(question, template),
        "ability": ABILITY,
        "reward_model": {"style": REWARD_STYLE, "ground_truth": ground_truth},
        "extra_info": extra_info,
    }


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as an Arrow table with :data:`ARROW_SCHEMA` (raises if a row does not fit it)."""
    return pa.Table.from_pylist(rows, schema=ARROW_SCHEMA)


def check_table(table: pa.Table) -> list[str]:
    """Problems that would stop verl or the graders from using ``table``; an empty list means it is usable.

    Checks the columns verl and ``reward_fns`` read, not the optional ``extra_info`` fields, so that parquet made by
    other tools (verl's own preprocessors, for instance) can be checked too.
    """
    problems = []
    required = ("data_source", "prompt", "ability", "reward_model", "extra_info")
    missing = [name for name in required if name not in table.column_names]
    if missing:
        return [f"missing columns {missing}; verl's RL parquet needs {list(required)}"]
    for index, row in enumerate(table.select(list(required)).to_pylist()):
        problem = _row_problem(row)
        if problem:
            problems.append(f"row {index}: {problem}")
    return problems


def _row_problem(row: Mapping[str, Any]) -> str:
    if not isinstance(row["data_source"], str) or not row["data_source"]:
        return f"data_source must be a non-empty string, got {row['data_source']!r}"
    prompt = row["prompt"]
    if not isinstance(prompt, list) or not prompt:
        return f"prompt must be a non-empty list of chat messages, got {prompt!r}"
    for message in prompt:
        if not isinstance(message, dict) or not message.get("role") or not isinstance(message.get("content"), str):
            return f"prompt messages need a role and a string content, got {message!r}"
    reward_model = row["reward_model"]
    if not isinstance(reward_model, dict) or reward_model.get("ground_truth") in (None, ""):
        return f"reward_model.ground_truth must be a non-empty value, got {reward_model!r}"
    extra_info = row["extra_info"]
    if not isinstance(extra_info, dict) or "index" not in extra_info or "split" not in extra_info:
        return f"extra_info must hold at least split and index, got {extra_info!r}"
    return ""
