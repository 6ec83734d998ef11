"""Session fixtures: the tiny Qwen2.5-VL (processor and saved model) and the converted VL fixture data."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def vl_processor():
    from tests.vl.tiny_vl import build_processor

    return build_processor()


@pytest.fixture(scope="session")
def tiny_vl_model_dir(tmp_path_factory, vl_processor) -> Path:
    from tests.vl.tiny_vl import build_model

    return build_model(tmp_path_factory.mktemp("tiny_vl"), vl_processor)


@pytest.fixture(scope="session")
def converted_vl(tmp_path_factory) -> Path:
    from tests.vl.fixtures import write_converted_vl_dir

    return write_converted_vl_dir(tmp_path_factory.mktemp("vl_data"))
