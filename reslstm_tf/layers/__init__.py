"""Keras layers of reslstm_tf: the residual LSTM stack and two-stream fusion."""

from reslstm_tf.layers.fusion import FUSION_LEVELS, FUSION_METHODS, LateFusion, StreamFusion
from reslstm_tf.layers.residual_lstm import ResidualLSTM

__all__ = ["FUSION_LEVELS", "FUSION_METHODS", "LateFusion", "ResidualLSTM", "StreamFusion"]
