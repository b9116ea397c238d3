import pytest
import torch

from spnkit import testing
from spnkit.core.interfaces import SliceSpec
from spnkit_pixelrnn import DiagonalBiLSTMDecoder, DiagonalBiLSTMOptions, RowLSTMDecoder, RowLSTMOptions

DECODERS = [
    (RowLSTMDecoder, RowLSTMOptions(layers=2, features=6)),
    (DiagonalBiLSTMDecoder, DiagonalBiLSTMOptions(layers=2, features=6)),
]


@pytest.mark.parametrize("cls,options", DECODERS, ids=["row_lstm", "diagonal_bilstm"])
@pytest.mark.parametrize("channels,context", [(1, 0), (3, 0), (3, 4)])
def test_causal(cls, options, channels, context):
    torch.manual_seed(0)
    testing.check_decoder_causality(cls(options, SliceSpec(channels, 4, 5, 3, context)))


@pytest.mark.parametrize("cls,options", DECODERS, ids=["row_lstm", "diagonal_bilstm"])
@pytest.mark.parametrize("channels,size,levels", [(1, (2, 3), 2), (3, (2, 2), 2)])
def test_normalized(cls, options, channels, size, levels):
    torch.manual_seed(0)
    testing.check_decoder_normalization(cls(options, SliceSpec(channels, *size, levels, context_channels=2)))


def test_diagonal_bilstm_sees_the_whole_context_and_row_lstm_a_triangle():
    """At (row 6, col 2) of a 7x16 slice, one layer: every earlier pixel for the Diagonal
    BiLSTM; for the Row LSTM a triangle: row r sees columns up to 2 + 3 + (5 - r) (the 7x7
    first layer reaches 3 columns right, each state-to-state step one more per row climbed)."""
    torch.manual_seed(0)
    spec = SliceSpec(1, 7, 16, 2)
    diagonal = testing.receptive_field(DiagonalBiLSTMDecoder(DiagonalBiLSTMOptions(layers=1, features=4), spec), 6, 2)[0]
    earlier = torch.zeros(7, 16, dtype=torch.bool)
    earlier[:6] = True
    earlier[6, :2] = True
    assert torch.equal(diagonal, earlier)
    row = testing.receptive_field(RowLSTMDecoder(RowLSTMOptions(layers=1, features=4), spec), 6, 2)[0]
    triangle = torch.zeros(7, 16, dtype=torch.bool)
    for r in range(6):
        triangle[r, : 11 - r] = True
    triangle[6, :2] = True
    assert torch.equal(row, triangle)


@pytest.mark.parametrize("cls,options", DECODERS, ids=["row_lstm", "diagonal_bilstm"])
def test_training_lowers_the_loss(cls, options):
    torch.manual_seed(0)
    testing.check_decoder_learns(cls(options, SliceSpec(1, 6, 6, 4)), lr=1e-2)
