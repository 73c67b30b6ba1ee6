"""DSPnet's loss terms as plain functions of tensors (each has a numpy-reference test)."""

from dspnet_tf.losses.adversarial import (
    discriminator_accuracy,
    discriminator_loss,
    generator_loss,
    sample_prior,
)
from dspnet_tf.losses.contrastive import conditional_info_nce
from dspnet_tf.losses.next_event import (
    masked_negative_log_likelihood,
    masked_softmax_cross_entropy,
    sampled_bce_loss,
    sampled_softmax_log_prob,
)

__all__ = [
    "conditional_info_nce",
    "discriminator_accuracy",
    "discriminator_loss",
    "generator_loss",
    "masked_negative_log_likelihood",
    "masked_softmax_cross_entropy",
    "sample_prior",
    "sampled_bce_loss",
    "sampled_softmax_log_prob",
]
