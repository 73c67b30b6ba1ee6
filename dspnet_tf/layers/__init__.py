"""Keras layers of DSPnet, one concept per module."""

from dspnet_tf.layers.augmentation import JointSequenceAugmenter
from dspnet_tf.layers.context_weights import ContextWeighting
from dspnet_tf.layers.discriminator import PriorDiscriminator
from dspnet_tf.layers.gru_encoder import GRUSequenceEncoder
from dspnet_tf.layers.feature_enhancement import SequenceFeatureEnhancement
from dspnet_tf.layers.prediction_head import PredictionHead, score_all
from dspnet_tf.layers.recency_attention import RecencyBiasedAttention
from dspnet_tf.layers.repeat_pointer import RepeatPointer
from dspnet_tf.layers.sequence_encoder import SequenceEncoder
from dspnet_tf.layers.target_scene_attention import TargetSceneAttention
from dspnet_tf.layers.transformer_block import TransformerBlock

__all__ = [
    "ContextWeighting",
    "GRUSequenceEncoder",
    "JointSequenceAugmenter",
    "PredictionHead",
    "PriorDiscriminator",
    "RecencyBiasedAttention",
    "RepeatPointer",
    "SequenceEncoder",
    "SequenceFeatureEnhancement",
    "TargetSceneAttention",
    "TransformerBlock",
    "score_all",
]
