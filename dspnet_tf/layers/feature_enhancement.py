"""Sequence feature enhancement (SFE): fuses the item and scene representations per position."""

from __future__ import annotations

from typing import Any, Dict, Optional

import tensorflow as tf

from dspnet_tf.layers.dropout import Dropout


@tf.keras.utils.register_keras_serializable(package="dspnet_tf")
class SequenceFeatureEnhancement(tf.keras.layers.Layer):
    """Fuses h_V (item network) and h_S (scene network) into one representation z per position.

    DSPnet's fusion concatenates [h_V ; h_S] and runs an MLP over it, so the item representation
    can be re-weighted by the scene context the user is in (the paper reports 2 MLP layers as the
    best depth). The last MLP layer is linear and maps back to the item width, and its output is
    added to h_V (a residual: our choice, so an uninformative scene sequence can be ignored by
    driving the MLP to zero rather than having to learn the identity).

    With `zero_init` the scene branch's last layer (the MLP's output layer, or W of the sum
    fusion) starts at zero, so at initialisation z = LayerNorm(h_V): the fused model starts as
    the item-only model and the scene branch grows only as far as the loss asks for it (the
    zero-initialised residual branch of ReZero / Fixup). Off by default: on MovieLens-100K it
    did not speed up the first epochs (benchmarks/QUALITY.md).

    The "sum" fusion is the ablation "without SFE": z = h_V + W h_S, no non-linearity.

    Example:
      >>> sfe = SequenceFeatureEnhancement(output_dim=8, hidden_dim=16, depth=2)
      >>> sfe(tf.zeros([2, 5, 8]), tf.zeros([2, 5, 4])).shape
      TensorShape([2, 5, 8])

    Args:
      output_dim: width of z (the item width d_v).
      hidden_dim: width of the hidden MLP layers.
      depth: number of Dense layers (>= 1); depth 1 is a single linear map of the concatenation.
      fusion: "concat_mlp" or "sum".
      dropout: dropout after each hidden layer.
      residual: add h_V to the MLP output.
      zero_init: start the scene branch's last layer at zero (needs `residual` for the MLP
        fusion: without the residual, a zero output would carry nothing to learn from).
    """

    def __init__(
        self,
        output_dim: int,
        hidden_dim: int,
        depth: int = 2,
        fusion: str = "concat_mlp",
        dropout: float = 0.0,
        residual: bool = True,
        zero_init: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if fusion not in ("concat_mlp", "sum"):
            raise ValueError(f"fusion must be 'concat_mlp' or 'sum', got {fusion!r}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.output_dim = int(output_dim)
        self.hidden_dim = int(hidden_dim)
        self.depth = int(depth)
        self.fusion = fusion
        self.dropout_rate = float(dropout)
        self.residual = bool(residual)
        self.zero_init = bool(zero_init)
        if self.zero_init and fusion == "concat_mlp" and not self.residual:
            raise ValueError("zero_init needs residual=True with the concat_mlp fusion "
                             "(a zero MLP output without the residual passes nothing on)")
        branch_init = "zeros" if self.zero_init else "glorot_uniform"
        policy = self.dtype_policy  # shared by the sub-layers (see TransformerBlock)
        if fusion == "sum":
            self.scene_projection = tf.keras.layers.Dense(
                self.output_dim, use_bias=False, kernel_initializer=branch_init,
                name="scene_projection", dtype=policy,
            )
            self.hidden_layers = []
        else:
            self.hidden_layers = [
                tf.keras.layers.Dense(self.hidden_dim, activation="gelu", name=f"hidden_{i}",
                                      dtype=policy)
                for i in range(self.depth - 1)
            ]
            self.hidden_dropouts = [
                Dropout(self.dropout_rate, dtype=policy)
                for _ in range(self.depth - 1)
            ]
            self.output_layer = tf.keras.layers.Dense(
                self.output_dim, kernel_initializer=branch_init, name="output", dtype=policy)
            self.norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="norm",
                                                           dtype=policy)

    def call(
        self, item_states: tf.Tensor, scene_states: tf.Tensor, training: Optional[bool] = None
    ) -> tf.Tensor:
        """Fuses item_states [..., d_v] and scene_states [..., d_s] into [..., output_dim]."""
        # Keras casts only the first input to the compute dtype.
        scene_states = tf.cast(scene_states, item_states.dtype)
        if self.fusion == "sum":
            return item_states + self.scene_projection(scene_states)
        x = tf.concat([item_states, scene_states], axis=-1)
        for dense, dropout in zip(self.hidden_layers, self.hidden_dropouts):
            x = dropout(dense(x), training=training)
        x = self.output_layer(x)
        if self.residual:
            x = x + item_states
        return self.norm(x)

    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments, so Keras can re-create the layer from a saved model."""
        config = super().get_config()
        config.update(
            output_dim=self.output_dim,
            hidden_dim=self.hidden_dim,
            depth=self.depth,
            fusion=self.fusion,
            dropout=self.dropout_rate,
            residual=self.residual,
            zero_init=self.zero_init,
        )
        return config
