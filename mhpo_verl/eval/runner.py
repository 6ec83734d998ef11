"""One evaluation run: read the problems, generate what is missing, grade, append, summarise.

The run folder is the state. Rerunning the same command continues where the last one stopped: samples already in
``samples.jsonl`` are kept, the missing ones are generated with the seeds they would have had, and the summary is
written (atomically) from the file's contents once every sample is there. A finished folder is summarised again
without loading the model.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mhpo_verl.eval.backends import (
    DEFAULT_BATCH_SIZE,
    Backend,
    BackendOptions,
    GenerationRequest,
    make_backend,
    resolve_backend,
)
from mhpo_verl.eval.errors import EvalInputError, RunFolderError
from mhpo_verl.eval.grading import DEFAULT_GRADER, Grader, GradingItem, load_grader
from mhpo_verl.eval.metrics import summarize
from mhpo_verl.eval.problems import Problem, load_problems
from mhpo_verl.eval.report import summary_markdown
from mhpo_verl.eval.sampling import SamplingSettings, sample_seed
from mhpo_verl.eval.store import (
    SUMMARY_JSON,
    SUMMARY_MD,
    SampleStore,
    check_manifest,
    record_manifest,
    write_json_atomic,
    write_text_atomic,
)
from mhpo_verl.eval.tokenization import PROMPT_FORMATS, load_tokenizer, render_prompt_ids, stop_token_ids
from mhpo_verl.eval.vision import load_processor, render_vision_prompt

logger = logging.getLogger(__name__)

# Settings that change what a sample is: a resume must not mix samples made under different values.
IDENTITY_KEYS = (
    "model",
    "tokenizer",
    "backend",
    "dtype",
    "sampling",
    "prompt_format",
    "system_prompt",
    "grader",
)


@dataclass
class EvalConfig:
    model: str
    data: Sequence[str]
    out: str | Path
    k: int = 32
    backend: str = "auto"
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    batch_size: int | None = None
    tokenizer: str | None = None
    prompt_format: str = "chat"
    system_prompt: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    engine_args: dict[str, Any] = field(default_factory=dict)
    grader: str = DEFAULT_GRADER
    grader_workers: int | None = None
    pass_ks: Sequence[int] | None = None
    limit: int | None = None
    allow_unknown_benchmarks: bool = False
    progress: bool = True

    def validate(self) -> None:
        if self.k < 1:
            raise EvalInputError(f"--k must be >= 1 (samples per problem), got {self.k}")
        if self.batch_size is not None and self.batch_size < 1:
            raise EvalInputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.prompt_format not in PROMPT_FORMATS:
            raise EvalInputError(f"--prompt-format must be one of {PROMPT_FORMATS}, got {self.prompt_format!r}")
        if self.tensor_parallel_size < 1:
            raise EvalInputError(f"--tensor-parallel-size must be >= 1, got {self.tensor_parallel_size}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise EvalInputError(f"--gpu-memory-utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        bad_pass_ks = [j for j in self.pass_ks or () if not 1 <= j <= self.k]
        if bad_pass_ks:
            raise EvalInputError(f"--pass-k values must be in [1, k={self.k}], got {bad_pass_ks}")
        if not self.data:
            raise EvalInputError("--data needs at least one file")
        load_grader(self.grader)  # a typo in --grader should fail before the model loads
        if self.grader_workers is not None and self.grader_workers < 0:
            raise EvalInputError(f"--grader-workers must be >= 0, got {self.grader_workers}")


@dataclass(frozen=True)
class _Task:
    problem: Problem
    sample_idx: int
    seed: int


def _manifest(config: EvalConfig, backend: str) -> dict[str, Any]:
    return {
        "model": config.model,
        "tokenizer": config.tokenizer or config.model,
        "backend": backend,
        "dtype": config.dtype,
        "sampling": config.sampling.as_dict(),
        "prompt_format": config.prompt_format,
        "system_prompt": config.system_prompt,
        "grader": config.grader,
    }


def _check_fingerprints(store: SampleStore, problems: Sequence[Problem]) -> None:
    for problem in problems:
        stored = store.fingerprints.get(problem.key)
        if stored is not None and stored != problem.fingerprint:
            raise RunFolderError(
                f"problem {problem.problem_id!r} of {problem.benchmark} ({problem.source}) differs from the one "
                f"whose samples are stored in {store.path} (prompt or ground truth changed); use a new --out folder"
            )


def _pending_tasks(store: SampleStore, problems: Sequence[Problem], k: int, run_seed: int) -> list[_Task]:
    """Missing samples in canonical order (problem by problem), so a problem's k prompts share a batch."""
    return [
        _Task(problem, idx, sample_seed(run_seed, problem.benchmark, str(problem.problem_id), idx))
        for problem in problems
        for idx in range(k)
        if not store.has(problem.benchmark, str(problem.problem_id), idx)
    ]


def _record(task: _Task, completion, grade: dict[str, Any]) -> dict[str, Any]:
    problem = task.problem
    return {
        "benchmark": problem.benchmark,
        "data_source": problem.data_source,
        "problem_id": problem.problem_id,
        "sample_idx": task.sample_idx,
        "seed": task.seed,
        "response": completion.text,
        "pred": grade["pred"],
        "score": grade["score"],
        "acc": grade["acc"],
        "reason": grade["reason"],
        "n_tokens": completion.n_tokens,
        "truncated": completion.truncated,
        "ground_truth": problem.ground_truth,
        "fingerprint": problem.fingerprint,
    }


class _Progress:
    """tqdm bar in samples with samples/s, plus the running accuracy of this invocation."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=done, unit="sample", desc="eval", disable=not enabled, file=sys.stderr)
        self.new_samples = 0
        self.new_correct = 0
        self.new_tokens = 0

    def update(self, records: Sequence[dict[str, Any]]) -> None:
        self.new_samples += len(records)
        self.new_correct += sum(record["acc"] for record in records)
        self.new_tokens += sum(record["n_tokens"] for record in records)
        self.bar.set_postfix(acc=f"{self.new_correct / self.new_samples:.3f}", refresh=False)
        self.bar.update(len(records))

    def close(self) -> None:
        self.bar.close()


def _render_prompts(
    config: EvalConfig, tokenizer: Any, tasks: Sequence[_Task], processor: Any = None
) -> dict[tuple[str, str], tuple]:
    """``(prompt token ids, multimodal inputs or None)`` per problem, rendered once however many samples it has.

    A problem with images is rendered by the checkpoint's processor (loaded on first need unless given)."""
    prompts: dict[tuple[str, str], tuple] = {}
    for task in tasks:
        problem = task.problem
        if problem.key in prompts:
            continue
        if problem.images:
            if config.prompt_format != "chat":
                raise EvalInputError(f"{problem.source}: a prompt with images needs --prompt-format chat")
            if processor is None:
                processor = load_processor(config.tokenizer or config.model, config.trust_remote_code)
            rendered = render_vision_prompt(
                processor, problem.messages, problem.images, config.system_prompt, problem.source
            )
            prompts[problem.key] = (rendered.prompt_ids, rendered.multi_modal)
        else:
            ids = render_prompt_ids(tokenizer, problem.messages, config.prompt_format, config.system_prompt)
            prompts[problem.key] = (tuple(ids), None)
    return prompts


def _backend_options(config: EvalConfig, tokenizer: Any, max_images_per_prompt: int = 0) -> BackendOptions:
    return BackendOptions(
        model=config.model,
        tokenizer=config.tokenizer or config.model,
        sampling=config.sampling,
        stop_token_ids=tuple(stop_token_ids(config.model, tokenizer, config.trust_remote_code)),
        dtype=config.dtype,
        trust_remote_code=config.trust_remote_code,
        device=config.device,
        tensor_parallel_size=config.tensor_parallel_size,
        gpu_memory_utilization=config.gpu_memory_utilization,
        max_model_len=config.max_model_len,
        engine_args=dict(config.engine_args),
        max_images_per_prompt=max_images_per_prompt,
    )


def _generate_and_grade(
    config: EvalConfig,
    backend_name: str,
    tasks: list[_Task],
    store: SampleStore,
    backend: Backend | None,
    n_total: int,
    processor: Any = None,
) -> None:
    tokenizer = load_tokenizer(config.tokenizer or config.model, config.trust_remote_code)
    prompts = _render_prompts(config, tokenizer, tasks, processor)
    batch_size = config.batch_size or DEFAULT_BATCH_SIZE[backend_name]
    own_backend = backend is None
    grader = Grader(config.grader, config.grader_workers)
    progress = None
    # At most one batch is being graded while the next is generated; batches are written in order.
    in_flight: deque = deque()

    def write_oldest() -> None:
        batch, completions, job = in_flight.popleft()
        records = [_record(t, c, g) for t, c, g in zip(batch, completions, job.result())]
        store.append(records)
        progress.update(records)

    try:
        if backend is None:
            max_images = max(len(task.problem.images) for task in tasks)
            backend = make_backend(backend_name, _backend_options(config, tokenizer, max_images))
        record_manifest(store.folder, _manifest(config, backend_name))
        progress = _Progress(total=n_total, done=n_total - len(tasks), enabled=config.progress)
        started = time.monotonic()
        for start in range(0, len(tasks), batch_size):
            batch = tasks[start : start + batch_size]
            requests = [GenerationRequest(prompts[t.problem.key][0], t.seed, prompts[t.problem.key][1]) for t in batch]
            completions = backend.generate(requests)
            if len(completions) != len(batch):
                raise RuntimeError(f"backend {backend.name!r} returned {len(completions)} completions for {len(batch)}")
            items = [
                GradingItem(t.problem.data_source, c.text, t.problem.ground_truth, t.problem.extra_info)
                for t, c in zip(batch, completions)
            ]
            in_flight.append((batch, completions, grader.submit(items)))
            while in_flight and (len(in_flight) > 1 or in_flight[0][2].done()):
                write_oldest()
        while in_flight:
            write_oldest()
    except BaseException:
        # Generation failed or was interrupted: keep the batches already generated, if their grading succeeds.
        while in_flight:
            try:
                write_oldest()
            except Exception:
                break
        raise
    finally:
        if progress is not None:
            progress.close()
        grader.close()
        if own_backend and backend is not None:
            backend.close()
    elapsed = max(time.monotonic() - started, 1e-9)
    logger.info(
        "generated and graded %d samples in %.1f s (%.2f samples/s, %.0f response tokens/s)",
        progress.new_samples,
        elapsed,
        progress.new_samples / elapsed,
        progress.new_tokens / elapsed,
    )


def run_eval(config: EvalConfig, backend: Backend | None = None, processor: Any = None) -> dict[str, Any]:
    """Evaluate (or finish evaluating) ``config.model``; returns the summary also written to ``summary.json``.

    ``backend`` replaces the one ``config.backend`` would build (embedding in another program, tests);
    ``processor`` the multimodal processor loaded from the checkpoint for problems with images.
    """
    config.validate()
    problems = load_problems(config.data, config.allow_unknown_benchmarks, config.limit)
    backend_name = backend.name if backend is not None else resolve_backend(config.backend)
    if config.sampling.greedy and config.k > 1:
        logger.warning("temperature 0 is greedy: all %d samples of a problem will be identical", config.k)
    out = Path(config.out)
    with SampleStore(out) as store:
        check_manifest(out, _manifest(config, backend_name), IDENTITY_KEYS)
        _check_fingerprints(store, problems)
        tasks = _pending_tasks(store, problems, config.k, config.sampling.seed)
        n_total = len(problems) * config.k
        if tasks:
            logger.info("%d of %d samples to generate (%s backend) into %s", len(tasks), n_total, backend_name, out)
            _generate_and_grade(config, backend_name, tasks, store, backend, n_total, processor)
        else:
            logger.info("all %d samples are already in %s; summarising", n_total, store.path)
        expected: dict[str, list[str]] = {}
        for problem in problems:
            expected.setdefault(problem.benchmark, []).append(str(problem.problem_id))
        summary = summarize(store.outcomes.values(), expected, config.k, config.pass_ks)
    summary["run"] = {
        **_manifest(config, backend_name),
        "k": config.k,
        "data": [str(path) for path in config.data],
        "limit": config.limit,
    }
    write_json_atomic(out / SUMMARY_JSON, summary)
    write_text_atomic(out / SUMMARY_MD, summary_markdown(summary))
    return summary
