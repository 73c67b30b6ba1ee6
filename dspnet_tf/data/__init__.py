"""Data: toy worlds and the tf.data input step shared by fit, the Trainer and the benchmarks."""

from dspnet_tf.data.sequences import left_pad, make_dataset, repeat_target_share
from dspnet_tf.data.toy import ToySequences, deterministic_transitions, scene_driven

__all__ = ["ToySequences", "deterministic_transitions", "left_pad", "make_dataset",
           "repeat_target_share", "scene_driven"]
