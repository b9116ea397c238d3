"""spnkit-pixelrnn: Row LSTM and Diagonal BiLSTM slice decoders, registered through spnkit's hooks."""

import spnkit
from spnkit_pixelrnn.decoders import DiagonalBiLSTMDecoder, DiagonalBiLSTMOptions, RowLSTMDecoder, RowLSTMOptions

__all__ = ["DiagonalBiLSTMDecoder", "DiagonalBiLSTMOptions", "RowLSTMDecoder", "RowLSTMOptions"]


@spnkit.hookimpl
def spnkit_register_decoders(register):
    register("row_lstm", RowLSTMDecoder)
    register("diagonal_bilstm", DiagonalBiLSTMDecoder)
