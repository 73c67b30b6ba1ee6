"""dspnet_tf: DSPnet, a scene-aware sequential recommender, in TensorFlow / Keras 2.

Importing this package sets TF_USE_LEGACY_KERAS=1 before TensorFlow is imported, so `tf.keras`
is Keras 2 (tf-keras), which TF Transform, TFMA and TFRS need.
"""

from dspnet_tf._keras_env import ensure_legacy_keras

ensure_legacy_keras()

from dspnet_tf._version import __version__  # noqa: E402
from dspnet_tf.config import ABLATIONS, BASELINES, ConfigError, DSPnetConfig  # noqa: E402
from dspnet_tf.models.dspnet import DSPnet  # noqa: E402

__all__ = ["ABLATIONS", "BASELINES", "ConfigError", "DSPnet", "DSPnetConfig", "__version__"]
