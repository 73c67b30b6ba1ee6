"""Makes `tf.keras` resolve to Keras 2 (tf-keras) in every process that imports dspnet_tf.

TF 2.16 defaults `tf.keras` to Keras 3, but TF Transform, TFMA and TFRS need Keras 2. The switch
is read once, when TensorFlow is first imported, so it must be set before that import.
"""

import os
import sys
import warnings


def ensure_legacy_keras() -> None:
    """Sets TF_USE_LEGACY_KERAS=1, or fails loudly if TensorFlow already chose Keras 3."""
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        if "tensorflow" in sys.modules:
            import tensorflow as tf  # pylint: disable=import-outside-toplevel

            if not tf.keras.__name__.startswith("tf_keras"):
                raise ImportError(
                    "TensorFlow was imported before dspnet_tf with Keras 3 as tf.keras. "
                    "Set TF_USE_LEGACY_KERAS=1 in the environment, or import dspnet_tf first."
                )
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    # Keep TensorFlow's C++ start-up chatter (e.g. CUDA plugin registration on a CPU-only
    # machine) out of user logs unless they ask for it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", message=".*non-supported Python version.*", category=FutureWarning)
