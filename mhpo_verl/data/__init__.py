"""Math datasets in verl's RL parquet schema: GSM8K, MATH, DAPO-Math-17k for training; MATH500, AIME24, AIME25,
AMC23 and HMMT25 for evaluation. The command line is ``python -m mhpo_verl data`` (see :mod:`mhpo_verl.data.__main__`).
"""

from __future__ import annotations

from mhpo_verl.data.catalog import DATASETS, DEFAULT_DATA_DIR, DatasetSpec, dataset_path, get_spec
from mhpo_verl.data.convert import ConversionReport, convert_records, write_parquet
from mhpo_verl.data.schema import ARROW_SCHEMA, DEFAULT_PROMPT_TEMPLATE, build_prompt, make_row

__all__ = [
    "ARROW_SCHEMA",
    "DATASETS",
    "DEFAULT_DATA_DIR",
    "DEFAULT_PROMPT_TEMPLATE",
    "ConversionReport",
    "DatasetSpec",
    "build_prompt",
    "convert_records",
    "dataset_path",
    "get_spec",
    "make_row",
    "write_parquet",
]
