"""Math benchmark evaluation: avg@k and unbiased pass@k on MATH500, AIME24/25, AMC23 and HMMT25.

Command line: ``python -m mhpo_verl.eval --help``. From Python::

    from mhpo_verl.eval import EvalConfig, SamplingSettings, run_eval
    summary = run_eval(EvalConfig(model="ckpt/hf", data=["data/aime24.parquet"], out="results/run", k=32))

Importing this package is cheap: torch, transformers and vLLM load only when a backend is built.
"""

from __future__ import annotations

from mhpo_verl.eval.errors import EvalInputError, RunFolderError
from mhpo_verl.eval.metrics import pass_at_k, summarize
from mhpo_verl.eval.runner import EvalConfig, run_eval
from mhpo_verl.eval.sampling import SamplingSettings

__all__ = ["EvalConfig", "EvalInputError", "RunFolderError", "SamplingSettings", "pass_at_k", "run_eval", "summarize"]
