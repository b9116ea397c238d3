"""Stages and pipelines: the objects that recipes build and that users compose in Python.

A stage models one bit plane (or the slices of it that earlier stages did not give) with an
ordering, an optional context encoder, a slice decoder and an optional conditioner (for
class-conditional models ``p(x | side)``). A pipeline splits images with a
quantizer and chains stages over a partition of the variables, so the system's NLL is the sum
of its stages' NLLs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from spnkit.core.interfaces import (
    Conditioner,
    ContextEncoder,
    Ordering,
    Quantizer,
    SliceDecoder,
    Stage,
    one_hot,
)
from spnkit.core.sampling import gumbel_noise

SIDE_HINT = "pass side (labels [B] or vectors [B, K])"


def subpixel_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Nats of each subpixel: logits ``[B, L, C, h, w]``, target ``[B, C, h, w]`` long ->
    ``[B, C, h, w]``. The softmax runs over rows of ``L`` contiguous logits, a view of the
    channels-last logits that decoders' ``forward_levels`` give (``F.cross_entropy`` on the 5D
    layout reduces over a strided dimension and copies in its backward pass)."""
    b, levels, c, h, w = logits.shape
    rows = logits.permute(0, 3, 4, 2, 1).reshape(-1, levels)  # [B*h*w*C, L]
    nats = nn.functional.cross_entropy(rows, target.permute(0, 2, 3, 1).reshape(-1), reduction="none")
    return nats.view(b, h, w, c).permute(0, 3, 1, 2)


class AutoregressiveStage(Stage):
    """A stage that generates slices one after another: the SPN when it has an encoder and
    several slices, a plain autoregressive decoder over the image with a raster ordering.

    With a ``conditioner``, its vector ``h [B, E]`` is given to the encoder (``side``) and,
    tiled to ``[B, E, h, w]``, appended to the context map the decoder sees (without an
    encoder it is the whole context), so ``decoder.spec.context_channels`` is ``D + E``.
    ``side=None`` is then a ``ValueError``; for "no label", pass labels of ``-1``.
    """

    eval_positions: int | None = None
    """``logits`` and ``log_prob`` run the decoder on the modelled slices of all the images
    together, in calls of about this many pixel positions (at least one slice). None: 2**14 on
    the CPU, where calls whose maps fit the caches run fastest (the quickstart is scored 1.3x
    to 1.5x faster than in one call per batch), 2**18 on accelerators, where fewer, larger calls
    pay; lower it to bound their memory."""

    def __init__(
        self,
        ordering: Ordering,
        decoder: SliceDecoder,
        encoder: ContextEncoder | None,
        image_shape: tuple[int, int, int],
        levels: int,
        cond_levels: int = 0,
        given_slices: int = 0,
        conditioner: Conditioner | None = None,
    ) -> None:
        super().__init__()
        self.ordering = ordering
        self.decoder = decoder
        self.encoder = encoder
        self.conditioner = conditioner
        self.channels, self.height, self.width = image_shape
        self.levels = levels
        self.cond_levels = cond_levels
        self.given_slices = given_slices
        self.num_slices = ordering.num_slices(self.height, self.width)
        self.slice_height, self.slice_width = ordering.slice_shape(self.height, self.width)
        if encoder is None and (self.num_slices - given_slices > 1 or given_slices or cond_levels):
            raise ValueError("a stage with several slices, given slices or conditioning needs a context encoder")
        side_channels = conditioner.out_channels if conditioner is not None else 0
        if encoder is not None and encoder.spec.side_channels != side_channels:
            raise ValueError(f"the encoder's spec.side_channels is {encoder.spec.side_channels}, "
                             f"but the conditioner gives {side_channels}")
        context_channels = (encoder.out_channels if encoder is not None else 0) + side_channels
        if decoder.spec.context_channels != context_channels:
            raise ValueError(f"the decoder's spec.context_channels is {decoder.spec.context_channels}, but the "
                             f"encoder and conditioner give {context_channels}")

    # -- layout helpers -------------------------------------------------------------------

    def _slice_one_hot(self, x_one_hot: torch.Tensor) -> torch.Tensor:
        """``[B, L, C, H, W]`` -> ``[B, N, L, C, h, w]``."""
        b, levels, c, height, width = x_one_hot.shape
        flat = self.ordering.to_slices(x_one_hot.reshape(b, levels * c, height, width))
        return flat.view(b, self.num_slices, levels, c, self.slice_height, self.slice_width)

    def _cond_slices(self, cond: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        if cond is None:
            return None
        return self._slice_one_hot(one_hot(cond, self.cond_levels, dtype))

    def _side_vector(self, side: torch.Tensor | None, batch: int, check: bool = True,
                     target: torch.Tensor | None = None) -> torch.Tensor | None:
        """``h [B, E]`` for side information, or None for an unconditional stage. ``check``
        validates the values of ``side`` (a device sync: off in training steps). Without
        ``side``, a conditioner that encodes the stage's input is given ``target`` (its code)."""
        if self.conditioner is None:
            return None
        if side is None and target is not None:
            side = self.conditioner.side_of(target)
            check = False  # computed here, valid by construction
        if side is None:
            raise ValueError(f"this stage is conditional: {SIDE_HINT}")
        if check:
            self.conditioner.check(side, batch)
        return self.conditioner(side.to(next(self.decoder.parameters()).device))

    def _context(self, slices: torch.Tensor, target: torch.Tensor, cond_slices: torch.Tensor | None,
                 side_h: torch.Tensor | None = None) -> torch.Tensor | None:
        """The decoder's context ``[B, D + E, h, w]``: the encoder's map, then ``side_h [B, E]`` tiled."""
        encoded = None
        if self.encoder is not None:
            side = () if side_h is None else (side_h,)  # encoders without side information take no such argument
            encoded = self.encoder(slices, target, cond_slices, *side)
        return self._with_side(encoded, side_h)

    def _with_side(self, encoded: torch.Tensor | None, side_h: torch.Tensor | None) -> torch.Tensor | None:
        """The encoder's map ``[B, D, h, w]`` (or None), then ``side_h [B, E]`` tiled, if any."""
        parts = [] if encoded is None else [encoded]
        if side_h is not None:
            parts.append(side_h.view(*side_h.shape, 1, 1).expand(-1, -1, self.slice_height, self.slice_width))
        if len(parts) == 1:
            return parts[0]  # the tiled view, not a copy: decoders' Conv1x1 maps it once per image
        return torch.cat(parts, dim=1) if parts else None

    def slice_context(self, slices: torch.Tensor, t: int, cond: torch.Tensor | None = None) -> torch.Tensor | None:
        """The decoder's context ``[B, D, h, w]`` for slice ``t`` of an unconditional stage while
        slices are set one at a time (the codec's walk), or None without an encoder.

        slices: ``[B, N, C, h, w]`` long, the stage's plane (those from ``t`` on are zero);
        cond: ``[B, C, H, W]`` long, the more significant bits, or None.
        """
        dtype = next(self.decoder.parameters()).dtype
        index = torch.full((slices.shape[0],), t, dtype=torch.long, device=slices.device)
        return self._context(one_hot(slices, self.levels, dtype).movedim(1, 2), index, self._cond_slices(cond, dtype))

    def ranks(self) -> torch.Tensor:
        return self.ordering.ranks(self.channels, self.height, self.width)

    def modelled_positions(self) -> list[tuple[int, int, int]]:
        first = self.given_slices * self.channels * self.slice_height * self.slice_width
        return [tuple(p) for p in (self.ranks() >= first).nonzero().tolist()]

    @property
    def modelled_dims(self) -> int:
        return (self.num_slices - self.given_slices) * self.channels * self.slice_height * self.slice_width

    # -- likelihood -----------------------------------------------------------------------

    def _slice_rows(self, batch: int, device: torch.device):
        """The modelled slices of ``batch`` images, in parts of one decoder call each (see
        ``eval_positions``): ``(images [R], targets [R])`` long, the image and slice of each row."""
        targets = torch.arange(self.given_slices, self.num_slices, device=device).repeat_interleave(batch)
        images = torch.arange(batch, device=device).repeat(self.num_slices - self.given_slices)
        positions = self.eval_positions or (2**14 if device.type == "cpu" else 2**18)
        per_call = max(1, positions // (self.slice_height * self.slice_width))
        return zip(images.split(per_call), targets.split(per_call))

    def _rows_context(self, slices: torch.Tensor | None, images: torch.Tensor, targets: torch.Tensor,
                       cond_slices: torch.Tensor | None, side_h: torch.Tensor | None) -> torch.Tensor | None:
        """``_context`` for rows ``images`` (indices into the batch) and their ``targets``."""
        return self._context(None if slices is None else slices[images], targets,
                             None if cond_slices is None else cond_slices[images],
                             None if side_h is None else side_h[images])

    def logits(self, target_one_hot: torch.Tensor, cond: torch.Tensor | None = None,
               side: torch.Tensor | None = None) -> torch.Tensor:
        slices = self._slice_one_hot(target_one_hot)
        cond_slices = self._cond_slices(cond, target_one_hot.dtype)
        batch = slices.shape[0]
        side_h = self._side_vector(side, batch, target=target_one_hot.argmax(dim=1))
        out = torch.zeros_like(slices)
        for images, targets in self._slice_rows(batch, slices.device):
            context = self._rows_context(slices, images, targets, cond_slices, side_h)
            out[images, targets] = self.decoder(slices[images, targets], context)
        b, n, levels, c, h, w = out.shape
        image = self.ordering.from_slices(out.view(b, n, levels * c, h, w), self.height, self.width)
        return image.view(b, levels, c, self.height, self.width)

    def log_prob(self, target: torch.Tensor, cond: torch.Tensor | None = None,
                 side: torch.Tensor | None = None) -> torch.Tensor:
        dtype = next(self.decoder.parameters()).dtype
        slices = None if self.encoder is None else self._slice_one_hot(one_hot(target, self.levels, dtype))
        levels_slices = self.ordering.to_slices(target)
        cond_slices = self._cond_slices(cond, dtype)
        batch = target.shape[0]
        side_h = self._side_vector(side, batch, target=target)
        total = torch.zeros(batch, dtype=dtype, device=target.device)
        for images, targets in self._slice_rows(batch, target.device):
            chosen = levels_slices[images, targets]
            context = self._rows_context(slices, images, targets, cond_slices, side_h)
            nats = subpixel_nll(self.decoder.forward_levels(chosen, context), chosen).sum(dim=(1, 2, 3))
            total = total.index_add(0, images, nats, alpha=-1)
        return total

    def loss(self, target: torch.Tensor, cond: torch.Tensor | None = None,
             generator: torch.Generator | None = None, side: torch.Tensor | None = None,
             uniform: torch.Tensor | None = None) -> torch.Tensor:
        dtype = next(self.decoder.parameters()).dtype
        batch = target.shape[0]
        slices = None if self.encoder is None else self._slice_one_hot(one_hot(target, self.levels, dtype))
        levels_slices = self.ordering.to_slices(target)
        if uniform is None:
            index = torch.randint(self.given_slices, self.num_slices, (batch,), generator=generator,
                                  device=generator.device if generator is not None else target.device).to(target.device)
        else:
            choices = self.num_slices - self.given_slices
            index = self.given_slices + (uniform.to(target.device) * choices).long().clamp(max=choices - 1)
        rows = torch.arange(batch, device=target.device)
        side_h = self._side_vector(side, batch, check=False, target=target)
        chosen = levels_slices[rows, index]
        context = self._context(slices, index, self._cond_slices(cond, dtype), side_h)
        return subpixel_nll(self.decoder.forward_levels(chosen, context), chosen).mean()

    # -- sampling -------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, batch: int, *, cond: torch.Tensor | None = None, prefix: torch.Tensor | None = None,
               temperature: float = 1.0, generator: torch.Generator | None = None,
               reference: bool = False, given: torch.Tensor | None = None,
               side: torch.Tensor | None = None, guidance: float | None = None) -> torch.Tensor:
        """See ``Stage.sample``. ``guidance`` ``W`` (labels only): classifier-free guidance, each
        subpixel drawn from ``(1 + W) * cond - W * uncond`` logits, ``uncond`` given "no label"
        (a conditioner with ``null_class``, trained with ``drop_labels > 0``); ``W = 0`` draws
        exactly what ``guidance=None`` (no guidance) draws. An unconditional stage ignores it."""
        dtype = next(self.decoder.parameters()).dtype
        device = next(self.decoder.parameters()).device
        shape = (batch, self.num_slices, self.levels, self.channels, self.slice_height, self.slice_width)
        noise = gumbel_noise(shape, generator, dtype=dtype).to(device)
        slices = torch.zeros(batch, self.num_slices, self.channels, self.slice_height, self.slice_width,
                             dtype=torch.long, device=device)
        if self.given_slices:
            if prefix is None:
                raise ValueError(f"this stage needs its first {self.given_slices} slice(s) as a prefix")
            slices[:, : self.given_slices] = self.ordering.to_slices(prefix)[:, : self.given_slices]
        cond_slices = self._cond_slices(cond, dtype)
        side_h = self._side_vector(side, batch)
        null_h = None
        if guidance is not None and side_h is not None:
            if side.dim() != 1:
                raise ValueError("guidance takes labels (a conditioner with a 'no label' row), not vectors")
            null_h = self._side_vector(torch.full_like(side, -1), batch)
        given_slices = None if given is None else self.ordering.to_slices(given)
        draw = self.decoder.sample_reference if reference else self.decoder.sample
        side = () if side_h is None else (side_h,)
        encode = None if self.encoder is None else self.encoder.sampling_context(slices, cond_slices, *side)
        encode_null = None if null_h is None or encode is None else \
            self.encoder.sampling_context(slices, cond_slices, null_h)
        # for an encoder without its own sampling path: [B, N, L, C, h, w], kept up to date
        slices_one_hot = one_hot(slices, self.levels, dtype).movedim(1, 2) if encode is None else None
        for t in range(self.given_slices, self.num_slices):
            if encode is None:
                context = self._context(slices_one_hot, torch.full((batch,), t, device=device), cond_slices, side_h)
            else:
                context = self._with_side(encode(t), side_h)
            kept = None if given is None else given_slices[:, t]
            if null_h is None:
                slices[:, t] = draw(noise[:, t], context=context, temperature=temperature, given=kept)
            else:
                if encode is None:
                    uncond = self._context(slices_one_hot, torch.full((batch,), t, device=device), cond_slices, null_h)
                else:
                    uncond = self._with_side(encode_null(t), null_h)
                slices[:, t] = self.decoder.sample_guided(noise[:, t], context=context, uncond=uncond,
                                                          weight=guidance, temperature=temperature, given=kept,
                                                          reference=reference)
            if encode is None:
                slices_one_hot[:, t] = one_hot(slices[:, t], self.levels, dtype)
        return self.ordering.from_slices(slices, self.height, self.width)


class Pipeline(nn.Module):
    """A multistage system over a partition of the image's variables.

    ``placements[name] = (plane, downsample)``: stage ``name`` models quantizer plane ``plane``
    at ``x[..., ::downsample, ::downsample]`` (downsample > 1: the first subscale slice, for
    size upscaling). Stages run in the given order; each sees the planes before its own as
    conditioning and, if it has given slices, the values earlier stages wrote into its plane.
    Side information (labels ``[B]`` or vectors ``[B, K]``) is per image and the same for
    every stage; stages without a conditioner ignore it. It may also be a mapping of stage
    names to each stage's own (``encode`` gives the codes of stages whose conditioner encodes
    their input; given no side, such stages encode their input in ``log_prob``).
    """

    def __init__(self, quantizer: Quantizer, stages: dict[str, Stage],
                 placements: dict[str, tuple[int, int]]) -> None:
        super().__init__()
        self.quantizer = quantizer
        self.stages = nn.ModuleDict(stages)
        self.placements = dict(placements)

    def stage_inputs(self, name: str, planes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What stage ``name`` sees of an image's planes: (its target ``[B, C, H', W']``, the
        more significant bits or None), at the stage's resolution."""
        plane, down = self.placements[name]
        target = planes[plane][..., ::down, ::down]
        cond = self.quantizer.conditioning(planes[:plane])[..., ::down, ::down] if plane else None
        return target, cond

    @staticmethod
    def stage_side(side: torch.Tensor | Mapping[str, torch.Tensor] | None, name: str) -> torch.Tensor | None:
        """Stage ``name``'s share of ``side``: the tensor itself, or its entry in a mapping."""
        return side.get(name) if isinstance(side, Mapping) else side

    def check_side(self, side: torch.Tensor | Mapping[str, torch.Tensor] | None, sampling: bool = False) -> None:
        """Raise ``ValueError`` naming the first conditional stage given no side information;
        one that encodes its input needs none, except to ``sampling`` (it has no input then)."""
        for name, stage in self.stages.items():
            conditioner = stage.conditioner
            if conditioner is None or self.stage_side(side, name) is not None:
                continue
            if conditioner.takes != "image":
                raise ValueError(f"stage {name!r} is conditional: {SIDE_HINT}")
            if sampling:
                raise ValueError(f"stage {name!r} is conditioned on the code of its input image: pass side "
                                 f"(codes [B, {conditioner.side_size}], from pipeline.encode(images))")

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x [B, C, H, W]`` long -> ``{stage: code [B, m]}`` for every stage whose conditioner
        encodes its input (``takes == "image"``): the side that samples given those codes."""
        planes = self.quantizer.encode(x)
        return {name: stage.conditioner.encode(self.stage_inputs(name, planes)[0])
                for name, stage in self.stages.items()
                if stage.conditioner is not None and stage.conditioner.takes == "image"}

    def log_prob(self, x: torch.Tensor, side: torch.Tensor | Mapping[str, torch.Tensor] | None = None
                 ) -> dict[str, torch.Tensor]:
        """``x [B, C, H, W]`` long, ``side`` per image or None -> ``{stage: [B] nats}``; the
        system's is their sum (for a stage given the code of its own input, ``-log p(x | code)``,
        not a likelihood of ``x``)."""
        self.check_side(side)
        planes = self.quantizer.encode(x)
        return {name: stage.log_prob(*self.stage_inputs(name, planes), self.stage_side(side, name))
                for name, stage in self.stages.items()}

    def bits_per_dim(self, x: torch.Tensor, side: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Each stage's share of the system's bits/dim, ``{stage: [B]}`` (dims of the whole image)."""
        dims = x[0].numel()
        return {name: -lp / (dims * math.log(2)) for name, lp in self.log_prob(x, side).items()}

    @torch.no_grad()
    def sample(self, batch: int, image_shape: tuple[int, int, int], *, temperatures: dict[str, float] | None = None,
               generator: torch.Generator | None = None, reference: bool = False,
               known: torch.Tensor | None = None, masks: list[torch.Tensor] | None = None,
               side: torch.Tensor | None = None, guidance: float | None = None) -> torch.Tensor:
        """Draw ``[B, C, H, W]`` long images through every stage, given ``side`` (per image)
        for conditional stages; ``guidance`` ``W``: classifier-free guidance in each of them (see
        ``AutoregressiveStage.sample``).

        Completion: ``known [B, C, H, W]`` long is an image whose bit planes are kept where
        ``masks[p] [B, C, H, W]`` bool (one mask per plane) is set; the rest is sampled. That is
        exactly the conditional when the kept variables come first in the order of generation
        (given bit planes or given slices); otherwise (e.g. a top half under a subscale
        ordering) each sampled subpixel conditions on every kept one before it.
        """
        self.check_side(side, sampling=True)
        temperatures = temperatures or {}
        device = next(self.parameters()).device
        planes = [torch.zeros(batch, *image_shape, dtype=torch.long, device=device) for _ in self.quantizer.plane_bits]
        known_planes = None if known is None else self.quantizer.encode(known.to(device))
        for name, stage in self.stages.items():
            plane, down = self.placements[name]
            if known_planes is not None:
                planes[plane] = torch.where(masks[plane].to(device), known_planes[plane], planes[plane])
            prefix, cond = self.stage_inputs(name, planes)
            given = None
            if known_planes is not None:
                given = torch.where(masks[plane].to(device), known_planes[plane], -1)[..., ::down, ::down]
            guided = {} if guidance is None else {"guidance": guidance}  # stages of other kinds need not take it
            drawn = stage.sample(batch, cond=cond, prefix=prefix, temperature=temperatures.get(name, 1.0),
                                 generator=generator, reference=reference, given=given,
                                 side=self.stage_side(side, name), **guided)
            planes[plane][..., ::down, ::down] = drawn
        return self.quantizer.decode(planes)

    def completion_masks(self, keep: str, image_shape: tuple[int, int, int]) -> list[torch.Tensor]:
        """Per-plane ``[C, H, W]`` bool masks for ``keep``: ``"top"`` (the top half of every
        plane), ``"planes:K"`` (the K most significant planes) or ``"slices:N"`` (the first N
        slices of every stage's ordering)."""
        kind, _, count = keep.partition(":")
        planes = len(self.quantizer.plane_bits)
        masks = [torch.zeros(image_shape, dtype=torch.bool) for _ in range(planes)]
        if kind == "top" and not count:
            for mask in masks:
                mask[:, : image_shape[1] // 2] = True
        elif kind == "planes" and count.isdigit() and int(count) < planes:
            for mask in masks[: int(count)]:
                mask[:] = True
        elif kind == "slices" and count.isdigit():
            for name, stage in self.stages.items():
                plane, down = self.placements[name]
                first = int(count) * stage.channels * stage.slice_height * stage.slice_width
                masks[plane][:, ::down, ::down] |= stage.ranks() < first
        else:
            raise ValueError(f"keep: expected top, planes:K (K < {planes}) or slices:N, got {keep!r}")
        return masks
