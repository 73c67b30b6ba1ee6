"""Fixtures of the serving tests: a running local server over two exported versions."""

from __future__ import annotations

import pytest

from serving.server import ModelServer, ServerOptions
from serving.testing import install_version


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
