"""Fixtures of the serving tests: two small exported versions and a running local server."""

from __future__ import annotations

import pytest

from serving.server import ModelServer, ServerOptions
from serving.testing import export_untrained_model, install_version

MAX_LEN = 8


@pytest.fixture(scope="session")
def exported_versions(tmp_path_factory):
    """{1: path, 2: path}: the same architecture with different weights (seeds 0 and 1)."""
    root = tmp_path_factory.mktemp("exports")
    return {version: export_untrained_model(str(root / str(version)), seed=version - 1,
                                            max_len=MAX_LEN)
            for version in (1, 2)}


@pytest.fixture(scope="module")
def server(exported_versions, tmp_path_factory):
    """A local server over both versions (policy `all`) on free loopback ports."""
    base = tmp_path_factory.mktemp("base")
    for version, path in exported_versions.items():
        install_version(str(base), version, path)
    options = ServerOptions(model_base_path=str(base), port=0, rest_port=0,
                            version_policy="all", poll_seconds=0)
    with ModelServer(options) as running:
        yield running
