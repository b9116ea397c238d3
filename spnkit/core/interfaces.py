"""The six abstract interfaces of spnkit: Ordering, Quantizer, ContextEncoder, SliceDecoder,
Conditioner, Stage.

Conventions used throughout:

* An image plane is a ``LongTensor [B, C, H, W]`` of levels in ``[0, L)``.
* One-hot inputs and logits share one layout, ``[B, L, C, h, w]`` (levels on dim 1), so
  ``F.cross_entropy(logits, target)`` and ``log_softmax(logits, 1)`` work directly.
* Order of generation: slices in the ordering's order; inside a slice, pixels in raster order
  and channels (R, G, B) inside a pixel.
* Side information ``side`` (conditional models) is per image: labels ``[B]`` int64
  (``-1``: no label), vectors ``[B, K]`` float, or the code ``[B, m]`` float of the stage's own
  input image (a conditioner that ``takes = "image"``, an auto-encoder's encoder: given no
  ``side``, the stage encodes its input); a stage's ``Conditioner`` maps it to a vector
  ``h [B, E]`` that is tiled over the slice for its context encoder and slice decoder.
* Every implementation carries an ``Options`` attrs class that recipes are validated against.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import attrs
import torch
from torch import nn

from spnkit.core import sampling
from spnkit.core.bits import join_planes


@attrs.frozen
class NoOptions:
    """Options class for components that take none."""


@attrs.frozen
class SliceSpec:
    """What a slice decoder models: a ``channels x height x width`` slice of subpixels with
    ``levels`` values each, given a context map ``[B, context_channels, height, width]``
    (``context_channels == 0``: no context)."""

    channels: int
    height: int
    width: int
    levels: int
    context_channels: int = 0


@attrs.frozen
class EncoderSpec:
    """What a context encoder sees.

    The stage's own plane arrives as ``num_slices = grid[0] * grid[1]`` slices of
    ``channels x height x width`` with ``levels`` values, slice ``n`` at meta-position
    ``(n // grid[1], n % grid[1])``. ``cond_levels > 0`` adds the more significant bits of the
    whole image, sliced the same way, as a fixed input; ``side_channels > 0`` the stage's
    side-information vector ``h [B, side_channels]``.
    """

    channels: int
    height: int
    width: int
    levels: int
    grid: tuple[int, int]
    cond_levels: int = 0
    side_channels: int = 0

    @property
    def num_slices(self) -> int:
        return self.grid[0] * self.grid[1]


def one_hot(x: torch.Tensor, levels: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[B, *rest]`` long -> ``[B, levels, *rest]`` one-hot float."""
    out = nn.functional.one_hot(x, levels).to(dtype)
    return out.movedim(-1, 1)


class Ordering(abc.ABC):
    """Splits an image into slices and fixes the order in which they are generated.

    Inside a slice the order is raster over pixels, then channels. ``pixel_order`` names the
    layout of pixels inside a slice, and decoders list the layouts they suit (``"raster"``:
    a 2D grid where convolutions make sense).
    """

    Options: ClassVar[type] = NoOptions
    pixel_order: ClassVar[str] = "raster"

    def __init__(self, options) -> None:
        self.options = options

    @abc.abstractmethod
    def check(self, height: int, width: int) -> list[str]:
        """Problems with using this ordering on ``height x width`` images (empty: fine)."""

    @abc.abstractmethod
    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Meta-positions ``(rows, cols)``: slice ``n`` is at ``(n // cols, n % cols)``."""

    @abc.abstractmethod
    def slice_shape(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of one slice."""

    @abc.abstractmethod
    def to_slices(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, N, C, h, w]``, slices in generation order."""

    @abc.abstractmethod
    def from_slices(self, slices: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Exact inverse of ``to_slices``: ``[B, N, C, h, w]`` -> ``[B, C, H, W]``."""

    def num_slices(self, height: int, width: int) -> int:
        rows, cols = self.grid(height, width)
        return rows * cols

    def ranks(self, channels: int, height: int, width: int) -> torch.Tensor:
        """``[C, H, W]`` long: the position of each subpixel in the order of generation."""
        n = self.num_slices(height, width)
        h, w = self.slice_shape(height, width)
        order = torch.arange(n * h * w * channels).view(1, n, h, w, channels)
        return self.from_slices(order.permute(0, 1, 4, 2, 3), height, width)[0]


class Quantizer(abc.ABC):
    """Maps images of ``in_bits`` to bit planes, most significant first."""

    Options: ClassVar[type] = NoOptions

    def __init__(self, options, in_bits: int) -> None:
        self.options = options
        self.in_bits = in_bits

    @abc.abstractmethod
    def check(self) -> list[str]:
        """Problems with these options for ``in_bits`` data (empty: fine)."""

    @property
    @abc.abstractmethod
    def plane_bits(self) -> list[int]:
        """Bits of each plane, most significant first."""

    @abc.abstractmethod
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[B, C, H, W]`` long in ``[0, 2**in_bits)`` -> one ``[B, C, H, W]`` long per plane."""

    @abc.abstractmethod
    def decode(self, planes: list[torch.Tensor]) -> torch.Tensor:
        """Planes -> ``[B, C, H, W]`` long image; ``encode(decode(p)) == p`` exactly."""

    def conditioning(self, planes: list[torch.Tensor]) -> torch.Tensor:
        """The planes before a stage's plane joined into one image of ``2**sum(bits)`` levels."""
        return join_planes(planes, self.plane_bits[: len(planes)])


class ContextEncoder(nn.Module, abc.ABC):
    """Embeds what precedes a target slice into a context map ``s`` for the decoder.

    Must not depend on own-plane slices at or after the target (the conformance kit checks).
    """

    Options: ClassVar[type] = NoOptions

    def __init__(self, options, spec: EncoderSpec) -> None:
        super().__init__()
        self.options = options
        self.spec = spec

    @property
    @abc.abstractmethod
    def out_channels(self) -> int:
        """Channels ``D`` of the context map."""

    @abc.abstractmethod
    def forward(
        self,
        slices: torch.Tensor,
        target: torch.Tensor,
        cond: torch.Tensor | None = None,
        side: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Context map for target slices.

        slices: ``[B, N, L, C, h, w]`` float one-hot of the stage's plane (only slices before
            ``target`` may be read).
        target: ``[B]`` long, the index of the slice to be generated.
        cond: ``[B, N, Lc, C, h, w]`` float one-hot of the more significant bits, or None.
        side: ``[B, E]`` float, the conditioner's vector (``E = spec.side_channels``); passed
            only when ``spec.side_channels > 0``, so encoders without it keep working.
        Returns ``[B, D, h, w]`` float.
        """

    def sampling_context(self, slices: torch.Tensor, cond: torch.Tensor | None = None,
                         side: torch.Tensor | None = None) -> Callable[[int], torch.Tensor] | None:
        """Hook for a stage that samples slice after slice: a function from a target slice ``t``
        to ``forward``'s map for it (up to rounding) that reuses work across targets, or None
        (the stage calls ``forward``).

        slices: ``[B, N, C, h, w]`` long levels of the stage's plane, which the stage fills in
            as it draws (the slices before ``t`` are drawn when ``t`` is asked for).
        cond, side: as for ``forward``.
        """
        return None


class SliceDecoder(nn.Module, abc.ABC):
    """Autoregressive model of one slice given an optional context map."""

    Options: ClassVar[type] = NoOptions
    pixel_orders: ClassVar[tuple[str, ...]] = ("raster",)

    def __init__(self, options, spec: SliceSpec) -> None:
        super().__init__()
        self.options = options
        self.spec = spec

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for every subpixel, teacher-forced.

        x: ``[B, L, C, h, w]`` float one-hot of the slice.
        context: ``[B, D, h, w]`` float or None.
        Returns ``[B, L, C, h, w]`` float; entry ``(c, y, x)`` depends only on subpixels
        earlier in raster-then-channel order (and on the context).
        """

    def forward_levels(self, levels: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``forward`` of the one-hot of ``levels``: what training and exact evaluation call.

        levels: ``[B, C, h, w]`` long in ``[0, spec.levels)``; context as for ``forward``.
        Returns the logits of ``forward`` (up to float rounding), in any memory layout.
        Decoders whose first layers are linear in the one-hot override it to skip the one-hot
        (a gather in place of a convolution over ``C*L`` input channels).
        """
        return self(one_hot(levels, self.spec.levels, next(self.parameters()).dtype), context)

    def sampling_cache(self, inputs: sampling.PixelInputs,
                       context: torch.Tensor | None) -> sampling.SliceCache | None:
        """Hook for a cached fast path: a ``SliceCache`` that computes the logits of the next
        pixel of ``inputs`` from the work done for earlier ones, or None (sample by full
        forward passes). Its logits must give the draws of ``sample_reference``.

        context: ``[B, D, h, w]`` float or None, as given to ``sample``.
        """
        return None

    def slice_cache(self, inputs: sampling.PixelInputs, context: torch.Tensor | None) -> sampling.SliceCache:
        """The subpixel-by-subpixel evaluation that ``sample`` runs: the ``sampling_cache`` or,
        for a decoder without one, a full forward pass per subpixel. For callers that set each
        value themselves (the codec sets the coded ones). Arguments as for ``sampling_cache``.
        """
        return self.sampling_cache(inputs, context) or _FullPasses(self, inputs, context)

    def sample_reference(
        self,
        noise: torch.Tensor,
        *,
        context: torch.Tensor | None = None,
        temperature: float = 1.0,
        given: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reference sampling: one full forward pass per subpixel.

        noise: ``[B, L, C, h, w]`` Gumbel noise from ``sampling.gumbel_noise``.
        context: ``[B, D, h, w]`` float or None.
        given: ``[B, C, h, w]`` long, values to keep (``-1``: sample), or None.
        Returns ``[B, C, h, w]`` long.
        """
        inputs = sampling.PixelInputs(noise)
        return sampling.draw_slice(_FullPasses(self, inputs, context), inputs, noise, temperature, given)

    def sample(
        self,
        noise: torch.Tensor,
        *,
        context: torch.Tensor | None = None,
        temperature: float = 1.0,
        given: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sampling entry point: through the ``sampling_cache`` when the decoder has one, else
        ``sample_reference``; draws exactly what ``sample_reference`` draws for the same noise.
        Arguments and result as for ``sample_reference``.
        """
        inputs = sampling.PixelInputs(noise)
        with torch.no_grad():
            cache = self.sampling_cache(inputs, context)
            if cache is not None:
                return sampling.draw_slice(cache, inputs, noise, temperature, given)
        return self.sample_reference(noise, context=context, temperature=temperature, given=given)

    def sample_guided(
        self,
        noise: torch.Tensor,
        *,
        context: torch.Tensor | None,
        uncond: torch.Tensor | None,
        weight: float,
        temperature: float = 1.0,
        given: torch.Tensor | None = None,
        reference: bool = False,
    ) -> torch.Tensor:
        """A slice drawn with classifier-free guidance: the logits given ``context`` (with the
        labels) and given ``uncond`` (with "no label"), each from its own ``slice_cache`` (full
        forward passes when ``reference``), mixed per subpixel by ``sampling.GuidedCache``
        (``weight`` W: ``(1 + W) * cond - W * uncond``). Other arguments and result as for
        ``sample_reference``."""
        inputs = sampling.TwinInputs(sampling.PixelInputs(noise), sampling.PixelInputs(noise))
        with torch.no_grad():
            caches = [_FullPasses(self, half, ctx) if reference else self.slice_cache(half, ctx)
                      for half, ctx in ((inputs.cond, context), (inputs.uncond, uncond))]
            return sampling.draw_slice(sampling.GuidedCache(*caches, weight), inputs, noise, temperature, given)


class _FullPasses(sampling.SliceCache):
    """No cache: a decoder's whole teacher-forced forward pass for every subpixel."""

    def __init__(self, decoder: SliceDecoder, inputs: sampling.PixelInputs, context: torch.Tensor | None) -> None:
        self.decoder, self.inputs, self.context = decoder, inputs, context

    def pixel_logits(self, row: int, col: int) -> torch.Tensor:
        x = one_hot(self.inputs.values, self.inputs.levels, self.inputs.features.dtype)
        return self.decoder(x, self.context)[:, :, :, row, col]


@attrs.frozen
class SideInfo:
    """What a conditional stage is given per image: ``kind`` ``"labels"`` (class ids in
    ``[0, size)``), ``"vectors"`` (``size`` floats), both read from the data, or ``"image"``:
    the stage's own input, encoded to a code of ``size`` floats (nothing read from the data)."""

    kind: str
    size: int

    @property
    def from_data(self) -> bool:
        """Whether the data must hold it for each image (labels, vectors), not the image itself."""
        return self.kind != "image"

    def __str__(self) -> str:
        if self.kind == "labels":
            return f"labels of {self.size} classes"
        if self.kind == "image":
            return f"its input image (codes of size {self.size})"
        return f"{self.kind} of size {self.size}"


@attrs.frozen
class InputSpec:
    """A stage's input image, as a conditioner that encodes it sees it: ``[B, channels,
    height, width]`` long of ``levels`` values (the stage's own bit plane, at its resolution)."""

    channels: int
    height: int
    width: int
    levels: int


class Conditioner(nn.Module, abc.ABC):
    """Maps a stage's side information to a vector ``h [B, E]`` (``E = out_channels``).

    ``takes`` says what ``side`` is: ``"labels"``, ``[B]`` int64 class ids in ``[0, size)``
    (``-1``: no label, where the conditioner supports it), ``"vectors"``, ``[B, size]``
    float, or ``"image"``: the code ``[B, size]`` float of the stage's own input, which
    ``encode`` computes (a stage given no ``side`` encodes its input, with gradients in
    training: an auto-encoder trained end to end; given codes, it models ``p(x | code)``).
    ``size_option`` names the ``Options`` field that holds ``size``. ``spec`` describes the
    stage's input image (recipes always pass it).
    """

    Options: ClassVar[type] = NoOptions
    takes: ClassVar[str] = "labels"
    size_option: ClassVar[str] = "classes"

    def __init__(self, options, spec: InputSpec | None = None) -> None:
        super().__init__()
        self.options = options
        self.spec = spec

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """``takes == "image"`` only: the stage's input ``[B, C, H, W]`` long of
        ``spec.levels`` values -> its code ``[B, size]`` float, the ``side`` it is given."""
        raise NotImplementedError(f"{type(self).__name__} takes {self.takes}, it does not encode images")

    def side_of(self, image: torch.Tensor) -> torch.Tensor | None:
        """The side information of a stage whose input is ``image`` when none is given: its
        code for a conditioner that takes the image, else None (the caller must give it)."""
        return self.encode(image) if self.takes == "image" else None

    @classmethod
    def side_info(cls, options) -> SideInfo:
        """The side information a conditioner with ``options`` takes."""
        return SideInfo(cls.takes, getattr(options, cls.size_option))

    @property
    def side_size(self) -> int:
        """The number of classes (labels) or the vector size ``K`` (vectors)."""
        return getattr(self.options, self.size_option)

    @property
    @abc.abstractmethod
    def out_channels(self) -> int:
        """Size ``E`` of the vector ``h``."""

    def check(self, side: torch.Tensor, batch: int) -> None:
        """Raise ``ValueError`` unless ``side`` is valid side information for ``batch`` images.

        Reads values, so it syncs with the device: stages call it outside training steps.
        """
        if self.takes == "labels":
            ok = tuple(side.shape) == (batch,) and side.dtype == torch.long
            expected = f"labels [{batch}] int64"
        else:
            ok = tuple(side.shape) == (batch, self.side_size) and side.is_floating_point()
            expected = f"{'codes' if self.takes == 'image' else 'vectors'} [{batch}, {self.side_size}] float"
        if not ok:
            raise ValueError(f"side: expected {expected}, got {list(side.shape)} {side.dtype}")

    @abc.abstractmethod
    def forward(self, side: torch.Tensor) -> torch.Tensor:
        """``side`` (labels ``[B]`` int64, vectors or codes ``[B, K]`` float) -> ``h [B, E]`` float."""


class Stage(nn.Module, abc.ABC):
    """One stage of a multistage system: a distribution over one bit plane (or part of it).

    ``target`` is ``[B, C, H, W]`` long of ``levels`` values; ``cond`` the more significant
    bits ``[B, C, H, W]`` long of ``cond_levels`` values (or None). Slices before
    ``given_slices`` are conditioning, not modelled. A stage with a ``conditioner`` models
    ``p(x | side)``: its methods then require ``side`` (labels ``[B]`` int64 or vectors
    ``[B, K]`` float) and raise ``ValueError`` without it, except where the conditioner
    encodes the stage's input (``takes == "image"``): given no ``side``, the likelihood methods
    use the code of ``target``, and ``sample`` needs codes. A stage without one ignores ``side``.

    Implementations set every attribute below in ``__init__`` (declared here as annotations
    only: a class-level value would shadow the submodules ``nn.Module`` keeps in ``_modules``).
    """

    channels: int
    """``C`` of the stage's ``[B, C, H, W]`` image."""
    height: int
    """``H`` of the stage's image (after any downsampling of its placement)."""
    width: int
    """``W`` of the stage's image."""
    levels: int
    """Values per subpixel of the stage's plane: ``target`` holds levels in ``[0, levels)``."""
    cond_levels: int
    """Values per subpixel of ``cond``, the more significant bits (0: no conditioning)."""
    ordering: Ordering
    """Cuts the image into slices and fixes their order of generation."""
    num_slices: int
    """Slices of the image, given ones included (``ordering.num_slices(height, width)``)."""
    slice_height: int
    """``h`` of one slice (``ordering.slice_shape(height, width)[0]``)."""
    slice_width: int
    """``w`` of one slice (``ordering.slice_shape(height, width)[1]``)."""
    given_slices: int
    """Leading slices taken from ``prefix`` as conditioning, not modelled."""
    encoder: ContextEncoder | None
    """Embeds the slices before the target (and ``cond``, ``side``) into a context map; None: no context."""
    decoder: SliceDecoder
    """Models one slice given the context map."""
    conditioner: Conditioner | None
    """Maps ``side`` to the vector ``h [B, E]``; None: an unconditional stage."""

    @property
    @abc.abstractmethod
    def modelled_dims(self) -> int:
        """Subpixels the stage models (``len(modelled_positions())``): the divisor of ``loss``."""

    @abc.abstractmethod
    def ranks(self) -> torch.Tensor:
        """``[C, H, W]`` long: the position of each subpixel in the order of generation."""

    @abc.abstractmethod
    def modelled_positions(self) -> list[tuple[int, int, int]]:
        """``(c, y, x)`` of every subpixel this stage models (not the given ones)."""

    @abc.abstractmethod
    def logits(self, target_one_hot: torch.Tensor, cond: torch.Tensor | None = None,
               side: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits for every subpixel, in image layout.

        target_one_hot: ``[B, L, C, H, W]`` float. Returns ``[B, L, C, H, W]`` float (entries
        of given slices are undefined).
        """

    @abc.abstractmethod
    def log_prob(self, target: torch.Tensor, cond: torch.Tensor | None = None,
                 side: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log-likelihood in nats of the modelled subpixels, summed: ``[B]`` float."""

    @abc.abstractmethod
    def loss(
        self, target: torch.Tensor, cond: torch.Tensor | None = None, generator: torch.Generator | None = None,
        side: torch.Tensor | None = None, uniform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unbiased estimate of ``-log_prob / modelled_dims`` from one uniformly drawn slice
        per example: scalar float (nats per modelled subpixel). ``uniform`` ``[B]`` float in
        [0, 1) picks each example's slice (default: drawn from ``generator``); it is a tensor, so
        the step has static shapes and no host sync. It runs in training steps, so it does not
        check the values of ``side`` (validate labels once, up front)."""

    @abc.abstractmethod
    def sample(
        self,
        batch: int,
        *,
        cond: torch.Tensor | None = None,
        prefix: torch.Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        reference: bool = False,
        given: torch.Tensor | None = None,
        side: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw ``[B, C, H, W]`` long; ``prefix`` supplies the given slices; ``given``
        ``[B, C, H, W]`` long holds subpixels to keep (``-1``: sample), for completion.
        Everything after ``batch`` is keyword-only."""
