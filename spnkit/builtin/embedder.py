"""The SPN slice embedder (Menick & Kalchbrenner 2018): the context encoder of a subscale stage.

Its input stacks the preceding slices along channels, one slot per relative meta-position
``(di, dj)`` that can precede a target, so each slice keeps its position relative to the
target whatever the target is (the input depth is the same for every target, and the
embedding is equivariant in ``(i, j)``); slots that fall outside the grid stay empty. For
depth upscaling the whole conditioning image, sliced the same way, is a fixed extra input.
An 8-unit embedding of the target's meta-position is tiled over the slice, and so is the
stage's side-information vector when it has a conditioner. Convolutions,
then self-attention, then residual blocks make the context map ``s``.
"""

from __future__ import annotations

import attrs
import torch
from torch import nn

from spnkit.core.hookspecs import hookimpl
from spnkit.core.interfaces import ContextEncoder, EncoderSpec
from spnkit.core.validators import at_most, divides, in_range, odd, up_to
from spnkit.nn.attention import TransformerBlock
from spnkit.nn.masked_conv import OneHotTaps


@attrs.frozen
class SliceEmbedderOptions:
    conv_layers: int = attrs.field(default=2, validator=up_to(256),
                                 metadata={"doc": "convolution layers over the stacked slices"})
    channels: int = attrs.field(default=64, validator=up_to(16384),
                              metadata={"doc": "features of the convolutions (and of the output map)"})
    filter_size: int = attrs.field(default=3, validator=[odd, at_most(63)],
                                 metadata={"doc": "the convolutions' kernel size"})
    attention_layers: int = attrs.field(default=1, validator=in_range(0, 256, closed_high=True),
                                      metadata={"doc": "self-attention layers after the convolutions"})
    heads: int = attrs.field(default=4, validator=divides("attention_channels"), metadata={"doc": "attention heads"})
    attention_channels: int = attrs.field(default=64, validator=up_to(16384), metadata={"doc": "attention features"})
    residual_blocks: int = attrs.field(default=1, validator=in_range(0, 256, closed_high=True),
                                     metadata={"doc": "residual blocks after the attention"})
    residual_channels: int = attrs.field(default=128, validator=up_to(16384),
                                       metadata={"doc": "hidden features of each residual block"})
    position_units: int = attrs.field(default=8, validator=up_to(1024),
                                    metadata={"doc": "units of the meta-position embedding tiled over the slice"})


def relative_offsets(rows: int, cols: int) -> list[tuple[int, int]]:
    """Every ``(di, dj)`` by which a meta-position can precede another in row-major order."""
    return [(di, dj) for di in range(-(rows - 1), 1) for dj in range(-(cols - 1), cols) if di < 0 or dj < 0]


def slot_table(rows: int, cols: int) -> torch.Tensor:
    """``[N, K]`` long: for target slice ``t`` and slot ``k`` (offset ``k``), the preceding slice
    that fills the slot, or ``N`` (an empty slice) when the offset leaves the grid."""
    offsets = relative_offsets(rows, cols)
    table = torch.full((rows * cols, len(offsets)), rows * cols, dtype=torch.long)
    for target in range(rows * cols):
        i, j = divmod(target, cols)
        for k, (di, dj) in enumerate(offsets):
            if 0 <= i + di < rows and 0 <= j + dj < cols:
                table[target, k] = (i + di) * cols + (j + dj)
    return table


class ResidualBlock(nn.Module):
    """``x + conv1x1(relu(conv3x3(relu(x))))`` with ``hidden`` channels inside."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.inner = nn.Conv2d(channels, hidden, 3, padding=1)
        self.outer = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.outer(torch.relu(self.inner(torch.relu(x))))


class SliceEmbedder(ContextEncoder):
    """SPN slice embedder: preceding slices at their relative positions, meta-position, conv, attention, residual blocks."""

    Options = SliceEmbedderOptions

    def __init__(self, options: SliceEmbedderOptions, spec: EncoderSpec) -> None:
        super().__init__(options, spec)
        self.register_buffer("slots", slot_table(*spec.grid), persistent=False)
        slot_count = self.slots.shape[1]
        in_channels = (slot_count * spec.levels + spec.num_slices * spec.cond_levels) * spec.channels
        in_channels += options.position_units + spec.side_channels
        self.position = nn.Embedding(spec.num_slices, options.position_units)
        pad = options.filter_size // 2
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels if i == 0 else options.channels, options.channels, options.filter_size, padding=pad)
            for i in range(options.conv_layers)
        )
        self.attention = None
        if options.attention_layers:
            self.to_attention = nn.Conv2d(options.channels, options.attention_channels, 1)
            self.attention = nn.ModuleList(TransformerBlock(options.attention_channels, options.heads, causal=False)
                                           for _ in range(options.attention_layers))
            self.from_attention = nn.Conv2d(options.attention_channels, options.channels, 1)
        self.residual = nn.ModuleList(ResidualBlock(options.channels, options.residual_channels)
                                      for _ in range(options.residual_blocks))
        # per-position layer norm of the map: residual sums can grow to hundreds, which saturates
        # the decoder's gates; it mixes no positions, so it cannot leak
        self.norm = nn.LayerNorm(options.channels)

    @property
    def out_channels(self) -> int:
        return self.options.channels

    def stack(self, slices: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """slices ``[B, N, L, C, h, w]``, target ``[B]`` -> ``[B, K*L*C, h, w]``: slot ``k`` holds
        the slice at offset ``k`` from the target, or zeros."""
        b, _, levels, c, h, w = slices.shape
        padded = torch.cat([slices, slices.new_zeros(b, 1, levels, c, h, w)], dim=1)
        chosen = padded[torch.arange(b, device=slices.device).view(b, 1), self.slots[target]]
        return chosen.reshape(b, -1, h, w)

    def forward(self, slices: torch.Tensor, target: torch.Tensor, cond: torch.Tensor | None = None,
                side: torch.Tensor | None = None) -> torch.Tensor:
        """slices ``[B, N, L, C, h, w]``, target ``[B]`` long, cond ``[B, N, Lc, C, h, w]`` or
        None, side ``[B, E]`` or None -> context map ``[B, D, h, w]``."""
        b, _, _, _, h, w = slices.shape
        inputs = [self.stack(slices, target)]
        if cond is not None:
            inputs.append(cond.reshape(b, -1, h, w))
        inputs.append(self.position(target).view(b, -1, 1, 1).expand(-1, -1, h, w))
        if side is not None:
            inputs.append(side.view(b, -1, 1, 1).expand(-1, -1, h, w))
        return self.after_first(self.convs[0](torch.cat(inputs, dim=1)))

    def after_first(self, x: torch.Tensor) -> torch.Tensor:
        """The context map from the first convolution's output ``x [B, D, h, w]`` (before its relu)."""
        b, _, h, w = x.shape
        x = torch.relu(x)
        for conv in self.convs[1:]:
            x = torch.relu(conv(x))
        if self.attention is not None:
            tokens = self.to_attention(x).flatten(2).transpose(1, 2)
            for block in self.attention:
                tokens = block(tokens)
            x = x + self.from_attention(tokens.transpose(1, 2).reshape(b, -1, h, w))
        for block in self.residual:
            x = block(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # channels-last, as the decoders' maps

    def sampling_context(self, slices: torch.Tensor, cond: torch.Tensor | None = None,
                         side: torch.Tensor | None = None) -> _SampledContexts:
        return _SampledContexts(self, slices, cond, side)


class _SampledContexts:
    """``SliceEmbedder.forward`` for one target after another while a stage samples. The first
    convolution is linear in its input, so it is summed by parts: each filled slot's one-hot
    as weight rows picked by its slice's levels (``OneHotTaps``; empty slots, most of them for
    early targets, add nothing), the conditioning and side maps, the same for every target,
    once, and the target's position embedding.

    slices: ``[B, N, C, h, w]`` long, filled in by the stage; cond: ``[B, N, Lc, C, h, w]``
    one-hot or None; side: ``[B, E]`` or None. Called with a target ``t``: ``[B, D, h, w]``.
    """

    def __init__(self, embedder: SliceEmbedder, slices: torch.Tensor, cond: torch.Tensor | None,
                 side: torch.Tensor | None) -> None:
        self.embedder, self.slices = embedder, slices
        b, n, c, h, w = slices.shape
        conv, levels, slots = embedder.convs[0], embedder.spec.levels, embedder.slots.shape[1]
        # the first convolution's input: the slots' one-hot, the conditioning's, the position, the side vector
        parts = [slots * levels * c, 0 if cond is None else cond[0].numel() // (h * w), embedder.position.embedding_dim]
        parts.append(conv.in_channels - sum(parts))
        slot_weight, cond_weight, self.position_weight, side_weight = conv.weight.split(parts, dim=1)
        kernel = slot_weight.unflatten(1, (slots, levels, c)).transpose(2, 3).flatten(1, 3)  # [D, K*C*L, f, f]
        self.taps, self.reach = OneHotTaps(kernel, levels), conv.padding
        self.fixed = conv.bias.view(-1, 1, 1)  # what every target's first convolution adds
        if cond is not None:
            self.fixed = self.fixed + nn.functional.conv2d(cond.reshape(b, -1, h, w), cond_weight, padding=self.reach)
        if side is not None:
            tiled = side.view(b, -1, 1, 1).expand(-1, -1, h, w)
            self.fixed = self.fixed + nn.functional.conv2d(tiled, side_weight, padding=self.reach)
        filled = embedder.slots < n  # [N, K]: the slots that hold a slice
        self.filled = [(embedder.slots[t, row], row.nonzero()[:, 0]) for t, row in enumerate(filled)]
        self.channels = torch.arange(c, device=slices.device)

    def __call__(self, target: int) -> torch.Tensor:
        b, _, c, h, w = self.slices.shape
        sources, slots = self.filled[target]  # the slices before the target and the slots they fill
        position = self.embedder.position.weight[target].view(1, -1, 1, 1).expand(b, -1, h, w)
        x = nn.functional.conv2d(position, self.position_weight, padding=self.reach) + self.fixed
        if len(sources):
            (pad_h, pad_w), (f_h, f_w) = self.reach, self.position_weight.shape[2:]
            levels = nn.functional.pad(self.slices[:, sources].flatten(1, 2), (pad_w, pad_w, pad_h, pad_h), value=-1)
            windows = levels.unfold(2, f_h, 1).unfold(3, f_w, 1).permute(0, 2, 3, 4, 5, 1).flatten(0, 2)
            summed = self.taps(windows, (slots.view(-1, 1) * c + self.channels).flatten())  # [B*h*w, D]
            x = x + summed.view(b, h, w, -1).permute(0, 3, 1, 2)
        return self.embedder.after_first(x)


@hookimpl
def spnkit_register_encoders(register):
    register("slice_embedder", SliceEmbedder)
