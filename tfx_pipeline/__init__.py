"""The TFX pipeline around dspnet_tf: event log -> ExampleGen -> Transform -> Trainer -> Pusher."""

import dspnet_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS=1 before TensorFlow loads)
