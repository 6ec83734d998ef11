"""Suite-wide scheduling: tests that start a Ray cluster run one after another on one xdist worker.

Two local Ray clusters on one 2-core runner starve each other's raylets past Ray's start-up timeouts, so every test
marked ``ray`` joins the ``ray`` group (``pytest -n 2 --dist loadgroup``, as scripts/test.sh runs it); the rest of
the suite spreads over the workers. Without xdist the marker changes nothing.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("ray") is not None:
            item.add_marker(pytest.mark.xdist_group("ray"))
