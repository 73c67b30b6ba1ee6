"""Keras models: DSPnet (and, later, the baselines that share its layers)."""

from dspnet_tf.models.dspnet import DSPnet

__all__ = ["DSPnet"]
