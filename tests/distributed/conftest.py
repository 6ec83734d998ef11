"""Shared by the multi-process tests: one tiny model per session (see :mod:`tests.distributed.tiny_model`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.distributed.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def char_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("char_llama"))
