"""The image encoder: a pretrained backbone cut at a layer, pooled, on its device.

It knows its feature space (fingerprint, attributes, the older names of the same space)
and turns a uint8 ``(N, 3, H, W)`` pixel batch from the
:class:`~deepfeat.featurize.image_reader.ImageReader` into float32 embeddings: normalised
(or folded into the first convolution), in the runtime's precision and layout, optionally
traced for the CPU, with test-time augmentation.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from deepfeat.featurize.backbones import ResolvedBackbone
from deepfeat.featurize.identity import fingerprint, legacy_fingerprints, space_precision
from deepfeat.featurize.runtime import Runtime
from deepfeat.featurize.surgery import (
    fold_input_normalization,
    optimize_for_inference,
    trace_for_cpu,
)
from deepfeat.featurize.truncate import PENULTIMATE, truncate
from deepfeat.store import FeatureCache

__all__ = ["CPU_FORWARD_ROWS", "JIT_MIN_IMAGES", "ImageEncoder"]

log = logging.getLogger(__name__)

#: Images per forward call on a CPU (a batch is split into slices of this size).
CPU_FORWARD_ROWS = 16
#: With ``jit="auto"``, jobs of at least this many images to featurize on a CPU run a
#: traced, oneDNN-fused copy of the network. Building it takes about 2 s; the faster
#: forward pass (1.4-2x here) repays that after roughly a thousand images.
JIT_MIN_IMAGES = 1000


class ImageEncoder:
    """A truncated backbone at a cut point: pixels in, embeddings out.

    Parameters
    ----------
    resolved : ResolvedBackbone
        The backbone, its weights identifier and preprocessing.
    runtime : Runtime
        Device, precision and layout.
    layer : str or None
        Graph node to cut at; ``None`` is the penultimate embedding.
    pool : str
        Spatial pooling at a named layer.
    tta : {"none", "flip"}
    jit : bool or "auto"
        Trace the network for the CPU (``auto``: for jobs of :data:`JIT_MIN_IMAGES` or more).
    name : str
        The backbone as the user named it (for logs and the space's attributes).
    weights : str or None
        The weights as the user named them (for the space's attributes).
    """

    def __init__(self, resolved: ResolvedBackbone, runtime: Runtime, *, layer: str | None, pool: str,
                 tta: str, jit: bool | str, name: str, weights: str | None) -> None:
        self.resolved = resolved
        self.runtime = runtime
        self.layer = layer
        self.pool = pool
        self.tta = tta
        self.jit = jit
        self.name = name
        self.weights = weights
        self._model: torch.nn.Module | None = None
        self.traced: torch.nn.Module | None = None
        self._want_trace = False
        self._trace_tried = False

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_model=None, traced=None, _trace_tried=False)
        return state

    # ------------------------------------------------------------------ identity
    @property
    def preprocess(self):  # noqa: ANN201 - Preprocess
        return self.resolved.preprocess

    def _identity(self) -> dict[str, Any]:
        return dict(backbone=f"{self.resolved.family}:{self.resolved.arch}", layer=self.layer or PENULTIMATE,
                    pool=self.pool, preprocess=self.preprocess.to_dict())

    @property
    def fingerprint(self) -> str:
        return fingerprint(weights_id=self.resolved.weights_id, precision=self.runtime.precision, tta=self.tta,
                           **self._identity())

    def space_in(self, cache: FeatureCache | None) -> str:
        """The name under which ``cache`` holds this feature space.

        :attr:`fingerprint`, unless the cache lacks it and holds the same space under
        the name deepfeat 0.1.0 gave it (see
        :func:`~deepfeat.featurize.identity.legacy_fingerprints`), computed with this
        precision: then that older space is read and extended, not computed again.
        """
        fp = self.fingerprint
        if cache is None or self.tta != "none" or cache.space_info(fp) is not None:
            return fp
        names = legacy_fingerprints(weights_ids=(self.resolved.weights_id, *self.resolved.legacy_weights_ids),
                                    **self._identity())
        for name in names:
            info = cache.space_info(name)
            if info is not None and space_precision(info) == self.runtime.precision:
                log.info("using the space %s written by deepfeat 0.1.0 for %s", name, fp)
                return name
        return fp

    def space_fields(self) -> dict[str, Any]:
        """What defines the space besides the backbone's name, as specs and the cache record it."""
        return {
            "weights_id": self.resolved.weights_id,
            "layer": self.layer or PENULTIMATE,
            "pool": self.pool,
            "preprocess": self.preprocess.to_dict(),
            "precision": self.runtime.precision,
            "tta": self.tta,
        }

    def space_attrs(self) -> dict[str, Any]:
        """What the cache records about a space this encoder creates."""
        import h5py
        import timm
        import torchvision

        from deepfeat import __version__

        return {
            "fingerprint": self.fingerprint,
            "backbone": self.name,
            "weights": "none (random, seeded)" if self.weights is None else self.weights,
            **self.space_fields(),
            "computed_with": self.runtime.describe(),
            "versions": {
                "deepfeat": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
                "timm": timm.__version__, "h5py": h5py.__version__, "numpy": np.__version__,
            },
        }

    # ------------------------------------------------------------------ network
    @property
    def model(self) -> torch.nn.Module:
        """The truncated backbone on its device (built on first access).

        Where its first convolution absorbed the mean/std normalisation
        (:func:`~deepfeat.featurize.surgery.fold_input_normalization`; attribute
        ``takes_raw_pixels``) it takes the uint8 pixel batch: feed it through
        :meth:`model_input`, never through ``preprocess.normalize`` yourself.
        """
        if self._model is None:
            t0 = time.perf_counter()
            net = truncate(self.resolved.build(), self.layer, self.pool, self.resolved.family)
            net = net.eval().to(self.runtime.device)
            if self.runtime.channels_last:
                net = net.to(memory_format=torch.channels_last)
            h, w = self.preprocess.crop
            example = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
            model = optimize_for_inference(net, self.layout(example.to(self.runtime.device)))
            # the network takes uint8 pixels where its first convolution can absorb mean/std
            p, dev = self.preprocess, self.runtime.device
            raw = fold_input_normalization(model, p.mean, p.std, self.layout(
                self._example_pixels(2, torch.Generator().manual_seed(0)).to(dev)), self.runtime.dtype)
            self._model = model if raw is None else raw
            log.info("built %s (%s) in %.1f s", self.name, self.layer or PENULTIMATE, time.perf_counter() - t0)
        return self._model

    @property
    def built(self) -> bool:
        return self._model is not None

    def expect(self, n_images: int | None) -> None:
        """Get ready for a job of ``n_images``: with ``jit="auto"`` a large CPU job runs traced."""
        self._want_trace = self._want_trace or self._use_trace(n_images)

    def prepare(self, n_images: int | None = None) -> None:
        """Build the network now, as a job of ``n_images`` images would run it."""
        self._want_trace = self._use_trace(n_images)
        self.network()

    def _use_trace(self, n_images: int | None) -> bool:
        if self.runtime.device.type != "cpu" or self.jit is False:
            return False
        return self.jit is True or (n_images is not None and n_images >= JIT_MIN_IMAGES)

    def ready(self) -> bool:
        """Whether :meth:`network` returns without building anything."""
        return self._model is not None and (self._trace_tried or not self._want_trace)

    def network(self) -> torch.nn.Module:
        """The network to run: the traced copy once one was built, else the eager one."""
        model = self.model
        if self._want_trace and not self._trace_tried:
            self._trace_tried = True
            t0 = time.perf_counter()
            h, w = self.preprocess.crop
            gen = torch.Generator().manual_seed(0)
            if getattr(model, "takes_raw_pixels", False):
                example = self.layout(self._example_pixels(CPU_FORWARD_ROWS, gen))
                check = self.layout(self._example_pixels(3, gen))
            else:
                example = self.layout(torch.randn(CPU_FORWARD_ROWS, 3, h, w, generator=gen))
                check = self.layout(torch.randn(3, 3, h, w, generator=gen))
            self.traced = trace_for_cpu(model, example, self.runtime, check)
            if self.traced is not None:
                log.info("traced and fused the network for the CPU in %.1f s", time.perf_counter() - t0)
        return model if self.traced is None else self.traced

    def probe_dim(self) -> int:
        """Embedding width, from one forward pass on zeros."""
        h, w = self.preprocess.crop
        x = torch.zeros(1, 3, h, w, device=self.runtime.device)
        with self.runtime.autocast():
            return int(self.model(x).shape[1])

    # ------------------------------------------------------------------ encoding
    def plan(self, n: int, batch_size: int, sizes: Any = None) -> list[list[int]]:
        """Batches of the ``n`` images of a job: in input order."""
        return [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Embeddings (float32, on the CPU) of a uint8 ``(N, 3, H, W)`` batch."""
        return self.infer(self.model_input(pixels))

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Forward a model-ready batch; float32 embeddings on the CPU.

        On a CPU the batch goes through in slices of :data:`CPU_FORWARD_ROWS` images, whose
        activations stay in cache (about 10 % faster per image than 32 at a time).
        """
        model = self.network()  # built on the first good batch: a run of only broken files never loads it
        step = CPU_FORWARD_ROWS if self.runtime.device.type == "cpu" else len(x)
        # the traced network casts internally; autocast would only add dispatch overhead
        ctx = torch.inference_mode() if model is self.traced else self.runtime.autocast()
        with ctx:
            outs = [self._embed_slice(model, x[s : s + step]) for s in range(0, len(x), step)]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out.float().cpu()

    def _embed_slice(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.tta == "none":
            return model(x)
        # "flip": the mean of the embeddings of the image and of its horizontal mirror,
        # summed in float32 so that an image and its mirror give the same row.
        mirrored = self.layout(torch.flip(x, dims=(3,)))
        return (model(x).float() + model(mirrored).float()) / 2

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the memory format the network runs in (channels_last or contiguous)."""
        fmt = torch.channels_last if self.runtime.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def model_input(self, batch: torch.Tensor) -> torch.Tensor:
        """A uint8 ``(N, 3, H, W)`` batch from the reader as the model's input on its device."""
        x = batch.to(self.runtime.device, non_blocking=True)
        if getattr(self.model, "takes_raw_pixels", False):  # normalisation folded into the network
            return self.layout(x)
        return self.layout(self.preprocess.normalize(x))

    def _example_pixels(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """A random uint8 ``(n, 3, H, W)`` batch at the input size."""
        h, w = self.preprocess.crop
        return torch.randint(0, 256, (n, 3, h, w), generator=gen, dtype=torch.uint8)
