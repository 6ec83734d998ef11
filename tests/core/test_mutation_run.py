"""The mutation run (scripts/mutation_run.py) stays runnable: every mutation still applies to the current sources,
exactly once, and the fast subset (the mutants issue 16 found surviving) is killed by the tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "mutation_run.py"


@pytest.fixture(scope="module")
def mutation_run():
    spec = importlib.util.spec_from_file_location("mutation_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutation_run"] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    yield module
    del sys.modules["mutation_run"]


def test_every_mutation_applies_exactly_once_and_changes_the_source(mutation_run):
    names = set()
    for mutation in mutation_run.MUTATIONS:
        text = (ROOT / mutation_run.TARGETS[mutation.target].path).read_text(encoding="utf-8")
        assert mutation_run.mutated(text, mutation) != text
        assert (mutation.target, mutation.name) not in names, mutation.name
        names.add((mutation.target, mutation.name))


def test_a_stale_snippet_is_an_error_not_a_silent_no_op(mutation_run):
    stale = mutation_run.Mutation("objective", "gone", "this text is not in objective.py", "")
    with pytest.raises(mutation_run.StaleMutation, match="found it 0 times"):
        mutation_run.mutated((ROOT / "mhpo_verl" / "objective.py").read_text(encoding="utf-8"), stale)


def test_every_core_module_has_mutants_and_their_tests_exist(mutation_run):
    for key, target in mutation_run.TARGETS.items():
        if target.core:
            assert sum(m.target == key for m in mutation_run.MUTATIONS) >= 10, key
        for stage in target.stages:
            for path in stage:
                assert (ROOT / path).is_file(), path


@pytest.mark.slow
def test_the_fast_subset_is_killed_by_the_tests_written_for_it(mutation_run, monkeypatch, capsys):
    """The four mutants issue 16 found surviving, each run against only the tests written to kill it (so that CI
    pays for a few test files, not the modules' whole suites)."""
    narrow = {
        "diagnostics": ("tests/core/test_mutation_gaps.py",),
        "advantage": ("tests/core/test_mutation_gaps.py",),
        "eval_metrics": ("tests/eval/test_metrics.py",),
    }
    for key, tests in narrow.items():
        monkeypatch.setitem(mutation_run.TARGETS, key, mutation_run.Target(mutation_run.TARGETS[key].path, (tests,)))
    fast = [m for m in mutation_run.MUTATIONS if m.fast]
    assert {m.target for m in fast} == set(narrow) and len(fast) == 4
    outcomes = mutation_run.run(fast, worktree=True, ref="HEAD", timeout_s=600, log=print)
    survivors = [o.mutation.name for o in outcomes if not o.killed]
    assert survivors == [], capsys.readouterr().out
    assert {o.how for o in outcomes} == {"failed"}  # killed by a failing assertion, not by an import error
