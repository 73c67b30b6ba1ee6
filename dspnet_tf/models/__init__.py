"""Keras models: DSPnet and the BERT4Rec baseline (the other baselines are DSPnet configs)."""

from dspnet_tf.models.bert4rec import BERT4Rec
from dspnet_tf.models.dspnet import DSPnet

__all__ = ["BERT4Rec", "DSPnet"]
