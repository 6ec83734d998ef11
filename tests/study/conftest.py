"""The study script lives in ``examples/benchmarks/`` (not a package): load it once as a module for the tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tests.demo.conftest import model_cache, smollm2_dir, tiny_model_dir  # noqa: F401  (fixtures for the slow test)

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "benchmarks" / "stability_study.py"


def load_study_module():
    name = "stability_study"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        module = importlib.util.module_from_spec(spec)
        # dataclasses resolve their module through sys.modules while the class bodies run.
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def study():
    return load_study_module()
