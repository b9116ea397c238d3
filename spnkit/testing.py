"""The conformance kit: exactness checks that every ordering, quantizer, decoder, encoder and
stage (a conditional one for every side value) must pass, built-in or third-party. Call them
from your plugin's own tests::

    from spnkit import testing
    testing.check_decoder_causality(MyDecoder(MyDecoder.Options(), SliceSpec(3, 4, 4, 4)))

Each check raises ``ConformanceError`` with a message that says what leaked or what is off.
"""

from __future__ import annotations

import itertools

import torch

from spnkit.core.interfaces import (
    ContextEncoder,
    Ordering,
    Quantizer,
    SliceDecoder,
    Stage,
    one_hot,
)


class ConformanceError(AssertionError):
    """A component breaks one of spnkit's exactness rules."""


# ----------------------------------------------------------------------------- round trips


def check_ordering_round_trip(ordering: Ordering, channels: int, height: int, width: int) -> None:
    """``from_slices(to_slices(x)) == x`` and every subpixel lands in exactly one slice position."""
    problems = ordering.check(height, width)
    if problems:
        raise ConformanceError(f"ordering rejects {height}x{width}: {problems}")
    n = ordering.num_slices(height, width)
    h, w = ordering.slice_shape(height, width)
    if n * h * w != height * width:
        raise ConformanceError(f"{n} slices of {h}x{w} do not hold {height}x{width} pixels")
    x = torch.arange(2 * channels * height * width).view(2, channels, height, width)
    slices = ordering.to_slices(x)
    if tuple(slices.shape) != (2, n, channels, h, w):
        raise ConformanceError(f"to_slices gave shape {tuple(slices.shape)}, expected {(2, n, channels, h, w)}")
    seen = torch.sort(slices.flatten()).values
    if not torch.equal(seen, torch.arange(x.numel())):
        missing = sorted(set(range(x.numel())) - set(slices.flatten().tolist()))[:5]
        raise ConformanceError(f"to_slices drops or repeats subpixels (e.g. missing flat indices {missing})")
    back = ordering.from_slices(slices, height, width)
    if not torch.equal(back, x):
        raise ConformanceError("from_slices(to_slices(x)) != x")
    ranks = ordering.ranks(channels, height, width)
    if not torch.equal(torch.sort(ranks.flatten()).values, torch.arange(channels * height * width)):
        raise ConformanceError("ranks are not a permutation of the subpixels")


def check_quantizer_round_trip(quantizer: Quantizer, samples: int = 256, seed: int = 0) -> None:
    """``decode(encode(x))`` keeps what the planes hold and ``encode(decode(p)) == p`` exactly."""
    g = torch.Generator().manual_seed(seed)
    bits = quantizer.plane_bits
    planes = [torch.randint(0, 1 << b, (samples, 1, 2, 2), generator=g) for b in bits]
    again = quantizer.encode(quantizer.decode(planes))
    for k, (p, q) in enumerate(zip(planes, again)):
        if not torch.equal(p, q):
            raise ConformanceError(f"encode(decode(planes)) changes plane {k}")
    x = torch.randint(0, 1 << quantizer.in_bits, (samples, 1, 2, 2), generator=g)
    encoded = quantizer.encode(x)
    for k, (plane, b) in enumerate(zip(encoded, bits)):
        if plane.dtype != torch.long or plane.min() < 0 or plane.max() >= (1 << b):
            raise ConformanceError(f"plane {k} leaves [0, {1 << b})")
    if not torch.equal(quantizer.encode(quantizer.decode(encoded))[0], encoded[0]):
        raise ConformanceError("decode(encode(x)) loses the most significant plane")


# ----------------------------------------------------------------------------- causality


def _raster_ranks(channels: int, height: int, width: int) -> torch.Tensor:
    return torch.arange(channels * height * width).view(height, width, channels).permute(2, 0, 1)


def _probe(values: torch.Tensor) -> torch.Tensor:
    """A random weighted sum of ``values``: unlike a plain sum it cannot vanish for outputs that
    are centred or normalised (logits minus their mean, layer norms)."""
    weights = torch.randn(values.shape, generator=torch.Generator().manual_seed(1234), dtype=values.dtype)
    return (values * weights.to(values.device)).sum()


def _input_gradient(logits_of, inputs: torch.Tensor, index: tuple) -> torch.Tensor:
    """Gradient of a random weighted sum of ``logits[:, :, *index]`` with respect to ``inputs``."""
    inputs = inputs.detach().requires_grad_(True)
    logits = logits_of(inputs)
    (grad,) = torch.autograd.grad(_probe(logits[(slice(None), slice(None), *index)]), inputs, allow_unused=True)
    return torch.zeros_like(inputs) if grad is None else grad


def receptive_field(decoder: SliceDecoder, row: int, col: int, channel: int = 0,
                    context: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """``[C, h, w]`` bool: which input subpixels move the logits of subpixel (channel, row, col)."""
    x = _random_one_hot(decoder, 2, seed)
    grad = _input_gradient(lambda inp: decoder(inp, context), x, (channel, row, col))
    return grad.abs().sum(dim=(0, 1)) > 0


def _random_one_hot(decoder: SliceDecoder, batch: int, seed: int) -> torch.Tensor:
    spec = decoder.spec
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, spec.levels, (batch, spec.channels, spec.height, spec.width), generator=g)
    return one_hot(x, spec.levels)


def _random_context(channels: int, height: int, width: int, batch: int, seed: int) -> torch.Tensor | None:
    if channels == 0:
        return None
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randn(batch, channels, height, width, generator=g)


def check_decoder_causality(decoder: SliceDecoder, batch: int = 2, seed: int = 0) -> None:
    """The logits of subpixel t have exactly zero gradient with respect to every one-hot input
    at or after t (raster over pixels, then channels)."""
    spec = decoder.spec
    decoder.eval()
    x = _random_one_hot(decoder, batch, seed)
    context = _random_context(spec.context_channels, spec.height, spec.width, batch, seed)
    ranks = _raster_ranks(spec.channels, spec.height, spec.width)
    sees_anything = False
    for c, y, xx in itertools.product(range(spec.channels), range(spec.height), range(spec.width)):
        grad = _input_gradient(lambda inp: decoder(inp, context), x, (c, y, xx))
        touched = grad.abs().sum(dim=(0, 1)) > 0
        sees_anything |= bool(touched.any())
        leak = touched & (ranks >= ranks[c, y, xx])
        if leak.any():
            where = [tuple(i) for i in leak.nonzero().tolist()][:5]
            raise ConformanceError(
                f"{type(decoder).__name__}: logits of subpixel (c={c}, y={y}, x={xx}) depend on "
                f"later or current inputs (c, y, x) {where}"
            )
    if not sees_anything and spec.channels * spec.height * spec.width > 1:
        raise ConformanceError(f"{type(decoder).__name__}: no logits depend on any input, so causality "
                               "was checked vacuously (dead units at tiny widths, or inputs ignored)")


def check_encoder_causality(encoder: ContextEncoder, batch: int = 2, seed: int = 0) -> None:
    """For every target slice t, the context map has zero gradient with respect to own-plane
    slices at or after t (given a random side vector when ``spec.side_channels > 0``)."""
    spec = encoder.spec
    encoder.eval()
    g = torch.Generator().manual_seed(seed)
    n = spec.num_slices
    shape = (batch, n, spec.channels, spec.height, spec.width)
    slices = one_hot(torch.randint(0, spec.levels, shape, generator=g), spec.levels).movedim(1, 2)
    cond = None
    if spec.cond_levels:
        cond = one_hot(torch.randint(0, spec.cond_levels, shape, generator=g), spec.cond_levels).movedim(1, 2)
    side = (torch.randn(batch, spec.side_channels, generator=g),) if spec.side_channels else ()
    for t in range(n):
        target = torch.full((batch,), t, dtype=torch.long)
        inputs = slices.detach().requires_grad_(True)
        out = encoder(inputs, target, cond, *side)
        if tuple(out.shape) != (batch, encoder.out_channels, spec.height, spec.width):
            raise ConformanceError(f"encoder output shape {tuple(out.shape)} is not {(batch, encoder.out_channels, spec.height, spec.width)}")
        (grad,) = torch.autograd.grad(_probe(out), inputs, allow_unused=True)
        if grad is None:
            continue
        touched = grad.abs().sum(dim=(0, 2, 3, 4, 5)) > 0
        if touched[t:].any():
            later = (touched[t:].nonzero().flatten() + t).tolist()
            raise ConformanceError(f"{type(encoder).__name__}: context for target slice {t} reads slices {later}")


def check_stage_causality(stage: Stage, cond: torch.Tensor | None = None, batch: int = 1, seed: int = 0,
                          max_subpixels: int | None = None, side: torch.Tensor | None = None) -> None:
    """The stage's logits for each modelled subpixel have zero gradient with respect to own-plane
    inputs at or after it in the ordering. ``side``: ``[batch]`` labels or ``[batch, K]``
    vectors for a conditional stage."""
    stage.eval()
    g = torch.Generator().manual_seed(seed)
    ranks = stage.ranks()
    c, h, w = ranks.shape
    x = one_hot(torch.randint(0, stage.levels, (batch, c, h, w), generator=g), stage.levels)
    positions = stage.modelled_positions()
    if max_subpixels is not None and len(positions) > max_subpixels:
        pick = torch.randperm(len(positions), generator=g)[:max_subpixels]
        positions = [positions[i] for i in pick.tolist()]
    for pos in positions:
        grad = _input_gradient(lambda inp: stage.logits(inp, cond, side), x, pos)
        leak = (grad.abs().sum(dim=(0, 1)) > 0) & (ranks >= ranks[pos])
        if leak.any():
            where = [tuple(i) for i in leak.nonzero().tolist()][:5]
            raise ConformanceError(f"stage logits of subpixel {pos} depend on later or current inputs {where}")


# ----------------------------------------------------------------------------- normalization


def all_images(levels: int, channels: int, height: int, width: int) -> torch.Tensor:
    """Every ``[C, H, W]`` image with ``levels`` values: ``[levels**(C*H*W), C, H, W]`` long."""
    count = channels * height * width
    if levels**count > 1 << 20:
        raise ValueError(f"{levels}**{count} images are too many to enumerate; use a tinier shape")
    digits = torch.arange(levels**count).unsqueeze(1) // (levels ** torch.arange(count - 1, -1, -1))
    return (digits % levels).view(-1, channels, height, width)


def _check_sum(log_probs: torch.Tensor, atol: float, what: str) -> None:
    total = torch.logsumexp(log_probs.double(), dim=0).exp().item()
    if abs(total - 1.0) > atol:
        raise ConformanceError(f"{what}: probabilities of all {len(log_probs)} images sum to {total:.8f}, not 1")


def check_decoder_normalization(decoder: SliceDecoder, context: torch.Tensor | None = None,
                                atol: float = 1e-5, chunk: int = 4096) -> None:
    """Enumerate every slice of the (tiny) spec: probabilities sum to 1 within ``atol``.

    ``context``: ``[1, D, h, w]`` or None (a random one is drawn when the decoder takes one).
    """
    spec = decoder.spec
    decoder.eval()
    if context is None:
        context = _random_context(spec.context_channels, spec.height, spec.width, 1, 0)
    images = all_images(spec.levels, spec.channels, spec.height, spec.width)
    log_probs = []
    with torch.no_grad():
        for part in images.split(chunk):
            ctx = None if context is None else context.expand(len(part), -1, -1, -1)
            logits = decoder(one_hot(part, spec.levels), ctx)
            log_probs.append(torch.log_softmax(logits.double(), 1).gather(1, part.unsqueeze(1)).sum(dim=(1, 2, 3, 4)))
    _check_sum(torch.cat(log_probs), atol, type(decoder).__name__)


def check_stage_normalization(stage: Stage, cond: torch.Tensor | None = None,
                              prefix: torch.Tensor | None = None, atol: float = 1e-5, chunk: int = 2048,
                              side: torch.Tensor | None = None) -> None:
    """Enumerate every value of the modelled subpixels (given slices fixed from ``prefix``):
    ``exp(log_prob)`` sums to 1. ``cond``/``prefix``: ``[1, C, H, W]`` long or None.

    ``side``: for a conditional stage, ``[S]`` labels or ``[S, K]`` vectors; the sum is
    checked for each of the ``S`` values separately.
    """
    stage.eval()
    c, h, w = stage.ranks().shape
    positions = stage.modelled_positions()
    values = all_images(stage.levels, 1, 1, len(positions)).view(-1, len(positions))
    base = torch.zeros(1, c, h, w, dtype=torch.long) if prefix is None else prefix
    index = tuple(torch.tensor(axis) for axis in zip(*positions))
    for given in [None] if side is None else side.unbind():
        log_probs = []
        with torch.no_grad():
            for part in values.split(chunk):
                images = base.repeat(len(part), 1, 1, 1)
                images[(slice(None), *index)] = part
                part_cond = None if cond is None else cond.expand(len(part), -1, -1, -1)
                part_side = None if given is None else given.expand(len(part), *given.shape)
                log_probs.append(stage.log_prob(images, part_cond, part_side).double())
        what = type(stage).__name__ if given is None else f"{type(stage).__name__} given side {given.tolist()}"
        _check_sum(torch.cat(log_probs), atol, what)


def check_decoder_levels(decoder: SliceDecoder, batch: int = 2, seed: int = 0, rtol: float = 1e-4) -> None:
    """``forward_levels(levels)``, what training and exact evaluation call, gives the logits of
    ``forward(one_hot(levels))`` (which the causality and normalization checks read) and the
    same parameter gradients, up to float rounding: within ``rtol`` of each tensor's largest
    magnitude."""
    spec = decoder.spec
    decoder.eval()
    g = torch.Generator().manual_seed(seed)
    levels = torch.randint(0, spec.levels, (batch, spec.channels, spec.height, spec.width), generator=g)
    context = _random_context(spec.context_channels, spec.height, spec.width, batch, seed)
    params = [p for p in decoder.parameters() if p.requires_grad]
    results = []
    for logits in (decoder(one_hot(levels, spec.levels), context), decoder.forward_levels(levels, context)):
        grads = torch.autograd.grad(_probe(logits), params, allow_unused=True)
        results.append([logits.detach()] + [torch.zeros_like(p) if d is None else d for p, d in zip(params, grads)])
    names = ["logits"] + [name for name, p in decoder.named_parameters() if p.requires_grad]
    for name, expected, got in zip(names, *results):
        if expected.shape != got.shape:
            raise ConformanceError(f"{type(decoder).__name__}.forward_levels: {name} has shape {tuple(got.shape)}, "
                                   f"forward gives {tuple(expected.shape)}")
        error = (expected - got).abs().max().item()
        if error > rtol * max(expected.abs().max().item(), 1e-6):
            raise ConformanceError(f"{type(decoder).__name__}.forward_levels differs from forward of the one-hot: "
                                   f"{name} off by {error:.3g} (largest magnitude {expected.abs().max().item():.3g})")


# ----------------------------------------------------------------------------- learning


def check_decoder_learns(decoder: SliceDecoder, steps: int = 25, lr: float = 3e-3, batch: int = 8,
                         min_drop: float = 0.1) -> None:
    """A few Adam steps on a fixed batch of patterned slices lower the loss by ``min_drop`` nats
    per subpixel: catches decoders whose gradients are cut or whose inputs are ignored."""
    spec = decoder.spec
    torch.manual_seed(0)
    rows, cols = torch.meshgrid(torch.arange(spec.height), torch.arange(spec.width), indexing="ij")
    pattern = (rows + cols).view(1, 1, spec.height, spec.width) + torch.arange(batch).view(batch, 1, 1, 1)
    x = (pattern + torch.arange(spec.channels).view(1, -1, 1, 1)) % spec.levels
    context = _random_context(spec.context_channels, spec.height, spec.width, batch, 0)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(decoder(one_hot(x, spec.levels), context), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    if not losses[-1] < losses[0] - min_drop:
        raise ConformanceError(f"{type(decoder).__name__}: loss went from {losses[0]:.3f} to {losses[-1]:.3f} "
                               f"in {steps} steps on a fixed batch")
