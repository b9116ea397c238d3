"""A progress bar over sampling: one tick per subpixel of an image drawn, advanced slice by
slice, and the images per second at the end.

Sampling takes minutes on a CPU and the core's sampling loops know nothing of progress bars, so
the bar counts from outside: while it is open, each stage's decoder reports every slice it
draws (``SliceDecoder.sample`` / ``sample_reference`` / ``sample_guided``, one of which every
stage built on the interfaces calls once per slice). A stage that draws without its
decoder's entry points still samples correctly; the bar then jumps to the end.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch
from tqdm import tqdm

from spnkit.core.system import Pipeline

ENTRY_POINTS = ("sample", "sample_reference", "sample_guided")


@contextlib.contextmanager
def sampling_bar(pipeline: Pipeline, images: int, enabled: bool = True, passes: int = 1) -> Iterator[tqdm]:
    """While open, a tqdm bar (on stderr) over the subpixels of one image that ``pipeline``
    models (every image of the batch is drawn together), times ``passes``, the calls to
    ``pipeline.sample`` it spans; it closes at 100% with ``images`` / elapsed seconds as images/s."""
    total = passes * sum(int(getattr(stage, "modelled_dims", 0)) for stage in pipeline.stages.values())
    bar = tqdm(total=total, desc=f"sample {images} image{'s' if images != 1 else ''}", unit="subpixel",
               unit_scale=True, disable=not enabled, dynamic_ncols=True)
    decoders = [stage.decoder for stage in pipeline.stages.values() if getattr(stage, "decoder", None) is not None]
    depth = [0]  # sample() may call sample_reference(): count the outer call only

    def counting(method):
        def wrapped(noise: torch.Tensor, **kwargs) -> torch.Tensor:
            depth[0] += 1
            try:
                drawn = method(noise, **kwargs)
            finally:
                depth[0] -= 1
            if not depth[0]:
                bar.update(int(noise[0, 0].numel()))  # noise [B, L, C, h, w]: C * h * w subpixels
            return drawn
        return wrapped

    if enabled:
        for decoder in decoders:
            for name in ENTRY_POINTS:
                object.__setattr__(decoder, name, counting(getattr(decoder, name)))
    started = time.perf_counter()
    try:
        yield bar
        bar.update(bar.total - bar.n)
        bar.set_postfix_str(f"{images / max(time.perf_counter() - started, 1e-9):.2f} images/s", refresh=False)
    finally:
        if enabled:
            for decoder in decoders:
                for name in ENTRY_POINTS:
                    decoder.__dict__.pop(name, None)
        bar.close()
