"""Test set-up: Keras 2 before TensorFlow, quiet logs, deterministic seeds."""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    tf.random.set_seed(0)
    yield
    tf.keras.backend.clear_session()


SERVING_MAX_LEN = 8


@pytest.fixture(scope="session")
def exported_versions(tmp_path_factory):
    """{1: path, 2: path}: the same architecture with different weights (seeds 0 and 1)."""
    from serving.testing import export_untrained_model  # pylint: disable=import-outside-toplevel

    root = tmp_path_factory.mktemp("exports")
    return {version: export_untrained_model(str(root / str(version)), seed=version - 1,
                                            max_len=SERVING_MAX_LEN)
            for version in (1, 2)}
