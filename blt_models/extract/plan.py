"""The run plan: everything resolved once before the first batch (layers, steps, clock, pooling,
device, dtypes, layout, shapes, provenance), and the loop that runs it into a store.

The loop is ``for each batch: x = plan.prepare(x, start); plan.forward(x, rows);
store.commit(...)``. ``prepare`` is the one place a batch of inputs is transformed before the model
sees it (checks, device, dtype, memory format, and a stimulus protocol of ``blt_models.stimuli``
that turns images ``start .. start+B-1`` into their ``[T, B, C, H, W]`` sequence).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._clock import ClockedModel
from .._version import __version__
from .._weights_hash import LOADED_SHA256_ATTR, weights_sha256
from ..errors import InputError, InvalidArgumentError
from .pooling import Pooler, parse_pool
from .sources import Batch, Source, tensor_fingerprint
from .stores import FORMAT_NAME, FORMAT_VERSION, Store, to_json

__all__ = ["RunPlan", "run", "weights_sha256", "weights_provenance", "parse_dtype"]

_DTYPES = {
    "float32": torch.float32, "float": torch.float32, "float64": torch.float64,
    "double": torch.float64, "float16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16,
}  # fmt: skip
_AUTOCAST = (torch.float16, torch.bfloat16)
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def parse_dtype(value: Any, what: str = "dtype") -> torch.dtype | None:
    """None, a floating torch dtype or its name; anything else raises InvalidArgumentError."""
    if value is None:
        return None
    if isinstance(value, str):
        key = value.replace("torch.", "")
        if key in _DTYPES:
            return _DTYPES[key]
    elif isinstance(value, torch.dtype) and value in _DTYPES.values():
        return value
    raise InvalidArgumentError(
        f"{what} must be float32, float16, bfloat16 or float64 (a torch.dtype or its name); "
        f"got {value!r}"
    )


def parse_compile(value: Any) -> dict[str, Any] | None:
    """``compile=`` of [`extract_features`][blt_models.extract_features]: False (eager), True (``torch.compile`` with
    ``dynamic=False``) or a dict of ``torch.compile`` arguments (e.g. ``{"mode":
    "reduce-overhead"}`` for CUDA graphs on a GPU)."""
    if value is False or value is None:
        return None
    if value is True:
        return {"dynamic": False}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        import inspect

        known = set(inspect.signature(torch.compile).parameters) - {"model"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise InvalidArgumentError(
                f"compile: torch.compile has no argument {', '.join(map(repr, unknown))} "
                f"(it takes {', '.join(sorted(known))})"
            )
        return {"dynamic": False, **value}
    raise InvalidArgumentError(
        f"compile must be True, False or a dict of torch.compile arguments; got {value!r}"
    )


def weights_provenance(model: ClockedModel, sha256: str) -> tuple[bool, str | None]:
    """``(pretrained, source)``: whether the model holds the published weights of its tag, and
    where its weights came from (Hub repo, URL, packaged file, ``checkpoint_path FILE``).

    ``sha256`` is ``weights_sha256`` of the tensors about to be used. ``create_model`` kept
    the same hash of what it loaded; if they differ (``load_state_dict``, an optimizer step, an
    in-place edit since), the weights are not what the source names: not pretrained, and the
    source says so.
    """
    cfg = model.pretrained_cfg
    if cfg is None:
        return False, None
    pretrained, source = False, getattr(cfg, "source", None)
    hub, url, file = (getattr(cfg, k, None) for k in ("hf_hub_id", "url", "file"))
    if hub:
        rev = getattr(cfg, "hf_hub_revision", None)
        pretrained, source = True, f"hf-hub:{hub}" + (f"@{rev}" if rev else "")
    elif url:
        pretrained, source = True, str(url)
    elif file:
        pretrained, source = True, f"blt_models package file weights/{file}"
    loaded = getattr(model, LOADED_SHA256_ATTR, None)
    if (pretrained or source) and loaded is not None and loaded != sha256:
        return False, f"{source}, then changed (these weights are not the ones loaded from it)"
    return pretrained, source


def _model_name(model: ClockedModel) -> str:
    cfg = model.pretrained_cfg
    return getattr(cfg, "name", "") or getattr(cfg, "architecture", "") or type(model).__name__


def _model_config(model: ClockedModel) -> dict[str, Any]:
    """The model's simple public attributes (its constructor arguments, in practice)."""
    simple = (int, float, str, bool, type(None))
    out: dict[str, Any] = {}
    for key, value in sorted(vars(model).items()):
        if key.startswith("_") or key == "training":
            continue
        if isinstance(value, simple) or (
            isinstance(value, (tuple, list)) and all(isinstance(v, simple) for v in value)
        ):
            out[key] = value
    return out


def _dims(shape: Sequence[int], random: bool) -> list[str]:
    """Dimension names of a stored layer array ``[N, S, ...]`` with per-image shape ``shape``."""
    if random:
        return ["image", "step", "component"]
    rest = {1: ["channel"], 3: ["channel", "height", "width"]}.get(len(shape) - 1)
    return ["image", "step", *(rest or [f"dim{i}" for i in range(2, len(shape) + 1)])]


def _is_channels_last(model: nn.Module) -> bool:
    weight = next((p for p in model.parameters() if p.ndim == 4), None)
    return (
        weight is not None
        and weight.is_contiguous(memory_format=torch.channels_last)
        and (not weight.is_contiguous())
    )


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


@dataclass
class RunPlan:
    """What one extraction computes and how, resolved once from the arguments."""

    model: ClockedModel
    layers: list[str]
    timesteps: int
    steps: list[int]
    pooler: Pooler
    device: torch.device
    compute_dtype: torch.dtype  # the dtype convolutions run in (autocast for 16-bit)
    store_dtype: torch.dtype
    memory_format: torch.memory_format
    first_step: dict[str, int]
    maps: dict[str, tuple[int, ...]] = field(default_factory=dict)  # per-image C, H, W
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # stored per image
    input_size: tuple[int, int] | None = None
    first_input: str | None = None  # fingerprint of the first preprocessed image (probe)
    stimulus: Any = None  # a blt_models.stimuli protocol, or None: the image at every step
    compile_options: dict[str, Any] | None = None  # torch.compile arguments, None: eager
    forward_fn: Any = None  # model.forward_timesteps, compiled or not (setup_model)
    restore_format: torch.memory_format | None = None  # the caller's layout, if changed
    restore_modes: list[tuple[nn.Module, bool]] = field(default_factory=list)
    caller_sha256: str | None = None  # weights_sha256 before a dtype cast of the run
    restore_tensors: dict[str, tuple[torch.dtype, torch.device]] = field(default_factory=dict)

    @classmethod
    def build(
        cls, model: ClockedModel, layers: Any, steps: Any, timesteps: int | None, pool: Any,
        device: Any, dtype: Any, store_dtype: Any, memory_format: str, stimulus: Any = None,
        compile: Any = False,
    ) -> RunPlan:  # fmt: skip
        canon = model.resolve_layers("all" if layers is None else layers)
        if stimulus is not None:  # the protocol sets the clock (and must fit the model)
            from ..stimuli import check_for_model

            T = check_for_model(stimulus, model, timesteps)
        else:
            T = model.resolve_timesteps(timesteps)
        step_list = model.resolve_steps(steps, T)
        pooler = Pooler(parse_pool(pool))
        first = model.first_steps(T)
        param = next(iter(model.parameters()), None)
        try:
            dev = (
                torch.device(device)
                if device is not None
                else (param.device if param is not None else torch.device("cpu"))
            )
        except (RuntimeError, TypeError) as err:
            raise InvalidArgumentError(f"device {device!r}: {err}") from None
        compile_options = parse_compile(compile)
        model_dtype = param.dtype if param is not None else torch.float32
        compute = parse_dtype(dtype) or model_dtype
        stored = parse_dtype(store_dtype, "store_dtype") or compute
        if memory_format not in MEMORY_FORMATS:
            raise InvalidArgumentError(
                f"memory_format must be one of {', '.join(MEMORY_FORMATS)}; got {memory_format!r}"
            )
        # channels_last is what oneDNN's convolutions run fastest on (see benchmarks/RESULTS.md);
        # the results are the same up to float rounding.
        use_cl = memory_format == "channels_last" or (
            memory_format == "auto" and dev.type == "cpu" and _has_conv(model)
        )
        return cls(
            model=model, layers=canon, timesteps=T, steps=step_list, pooler=pooler, device=dev,
            compute_dtype=compute, store_dtype=stored,
            memory_format=torch.channels_last if use_cl else torch.contiguous_format,
            first_step={name: int(first[name]) for name in canon}, stimulus=stimulus,
            compile_options=compile_options,
        )  # fmt: skip

    # -- setup
    @property
    def writes_channels_last(self) -> bool:
        """Whether layers write straight into channels-last result rows (see MemoryStore)."""
        return (
            self.memory_format is torch.channels_last
            and self.pooler.identity
            and self.device.type == "cpu"
        )

    @property
    def autocast(self) -> bool:
        return self.compute_dtype in _AUTOCAST

    def setup_model(self) -> None:
        """Eval mode, device, weights dtype (fp32 weights under 16-bit autocast), layout.

        For channels_last the model's weights are converted for the run and converted back by
        ``restore_model``. The inputs alone would make oneDNN run channels_last too (bit for
        bit the same), but then every convolution reorders its weights on every call: at 32 px
        that was 15 MiB more peak memory and 10-15% less speed (benchmarks/RESULTS.md).
        """
        # What the caller's model had, put back by restore_model: each module's train/eval
        # mode, each tensor's dtype and device.
        self.restore_modes = [(m, m.training) for m in self.model.modules()]
        self.restore_tensors = {
            name: (t.dtype, t.device)
            for name, t in itertools.chain(
                self.model.named_parameters(), self.model.named_buffers()
            )
        }
        self.model.eval()
        weights = torch.float32 if self.autocast else self.compute_dtype
        # Provenance is judged on the caller's weights: an exact cast for the run (float64, a
        # bf16 model's fp32 weights under autocast) changes the hash, not the weights.
        casts = any(
            t.is_floating_point() and t.dtype != weights for t in self.model.state_dict().values()
        )
        self.caller_sha256 = weights_sha256(self.model) if casts else None
        self.model.to(device=self.device, dtype=weights)
        self.restore_format = None
        if self.memory_format is torch.channels_last and not _is_channels_last(self.model):
            self.restore_format = torch.contiguous_format
            self.model.to(memory_format=torch.channels_last)
        self.forward_fn = self.model.forward_timesteps
        if self.compile_options is not None:
            # One graph for the whole clock (no graph breaks, tested); a fixed batch size keeps it
            # to two compilations (full batches and the last one).
            self.forward_fn = torch.compile(self.model.forward_timesteps, **self.compile_options)

    def restore_model(self) -> None:
        """Undo ``setup_model``: the caller's model keeps its own layout, dtypes, device and
        modes (an extraction with ``dtype="float64"`` leaves no float64 model behind)."""
        if self.restore_format is not None:
            self.model.to(memory_format=self.restore_format)
            self.restore_format = None
        named = itertools.chain(self.model.named_parameters(), self.model.named_buffers())
        with torch.no_grad():
            for name, tensor in named:
                dtype, device = self.restore_tensors.get(name, (tensor.dtype, tensor.device))
                if tensor.dtype != dtype or tensor.device != device:
                    tensor.data = tensor.data.to(device=device, dtype=dtype)
        for module, training in self.restore_modes:
            module.training = training
        self.restore_tensors, self.restore_modes = {}, []

    def probe(self, sample: Tensor) -> None:
        """Map and stored shapes of every layer for inputs of the sample's size."""
        if sample.ndim != 4:
            raise InputError(
                f"the source gives images of shape {tuple(sample.shape[1:])}; expected [C, H, W]"
            )
        h, w = int(sample.shape[-2]), int(sample.shape[-1])
        self.input_size = (h, w)
        # The first image as the model sees it: a resume, a reuse or a join of shards with
        # another preprocessing (a custom transform= is not otherwise recorded) is refused.
        self.first_input = tensor_fingerprint(sample[0])
        all_maps = self.model.layer_shapes(h, w)
        self.maps = {name: all_maps[name] for name in self.layers}
        S = len(self.steps)
        self.shapes = {
            name: (S, *self.pooler.stored_shape(name, shape)) for name, shape in self.maps.items()
        }

    def metadata(self, source: Source, batch_size: int) -> dict[str, Any]:
        model = self.model
        sha256 = weights_sha256(model)
        pretrained, weights_source = weights_provenance(model, self.caller_sha256 or sha256)
        cfg = model.pretrained_cfg
        random = self.pooler.spec.kind == "random"
        return to_json(
            {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "model": {
                    "name": _model_name(model),
                    "class": type(model).__name__,
                    "config": _model_config(model),
                    "pretrained_cfg": cfg.to_dict() if hasattr(cfg, "to_dict") else None,
                },
                "pretrained": pretrained,
                "weights_source": weights_source,
                "weights_sha256": sha256,
                "timesteps": self.timesteps,
                "steps": self.steps,
                "layers": self.layers,
                "first_step": self.first_step,
                "inactive_steps": "before first_step a layer carries no image information: "
                "zeros where it is absent, or the image-independent values a family computes "
                "there (blt_models.TimestepOutput)",
                "pool": self.pooler.spec.to_dict(),
                "dtype": str(self.store_dtype).replace("torch.", ""),
                "compute_dtype": str(self.compute_dtype).replace("torch.", "")
                + (" (autocast)" if self.autocast else ""),
                "data_config": source.data_config,
                "transform": source.transform_repr,
                "first_input": self.first_input,
                "source": {"kind": source.kind, **source.info},
                "fingerprints": "per image in /fingerprints: file:<blake2b-128>:<size>:<mtime_ns> "
                "for files, tensor:<blake2b-128 of dtype, shape, bytes> otherwise",
                "n_images": source.n,
                "batch_size": batch_size,
                "feature_shapes": {k: list(v) for k, v in self.shapes.items()},
                "dims": {k: _dims(v, random) for k, v in self.shapes.items()},
                "library": {"blt_models": __version__, "torch": torch.__version__},
                "stimulus": None if self.stimulus is None else self.stimulus.to_dict(),
                "compile": self.compile_options,  # informational: results equal to float rounding
            }
        )

    # -- per batch
    def prepare(self, x: Tensor, start: int) -> Tensor:
        """The batch of images ``start .. start+B-1`` as the model takes it: checked, on the
        device, in the plan's layout, through the stimulus protocol if there is one."""
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise InputError(
                f"the source gives {getattr(x, 'dtype', type(x).__name__)} images; tensor "
                "sources must be preprocessed floating-point images "
                "(blt_models.create_transform(model) does it for PIL images)"
            )
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            raise InputError(
                f"the source gives images of {tuple(x.shape[-2:])} px after images of "
                f"{self.input_size} px; every image must have the same size (resize them, or "
                "pass transform= / use the model's preprocessing)"
            )
        dtype = torch.float32 if self.autocast else self.compute_dtype
        x = x.to(device=self.device, dtype=dtype, non_blocking=True)
        if self.memory_format is torch.channels_last and x.ndim == 4:
            # .to restrides even a one-channel batch, which is NCHW-contiguous and channels-last
            # at once (.contiguous would keep NCHW strides, and PyTorch would then run NCHW)
            x = x.to(memory_format=torch.channels_last)
        if self.stimulus is not None:  # [B, ...] -> the protocol's [T, B, ...] sequence
            from ..stimuli import apply_to_batch

            x = apply_to_batch(self.stimulus, x, start)
            if self.memory_format is torch.channels_last:  # every frame [B, C, H, W] channels-last
                T, B, C, H, W = x.shape
                strides = (B * H * W * C, H * W * C, 1, W * C, C)  # explicit, also for C = 1
                x = torch.empty_strided(x.shape, strides, dtype=x.dtype, device=x.device).copy_(x)
        return x

    def forward(self, x: Tensor, rows: dict[str, Tensor]) -> None:
        """Run the clock on ``x`` and write the stored features into ``rows`` ([b, S, ...])."""
        direct = self.pooler.identity and self.device.type == "cpu"
        buffers = rows if direct else None
        grad = torch.no_grad() if self.autocast else torch.inference_mode()
        with grad, torch.autocast(self.device.type, self.compute_dtype, enabled=self.autocast):
            res = self.forward_fn(
                x, timesteps=self.timesteps, layers=self.layers, steps=self.steps,
                buffers=buffers,
            )  # fmt: skip
            if not direct:
                for name in self.layers:
                    f = res.features[name].transpose(0, 1)  # [b, S, ...], contiguous storage
                    rows[name].copy_(self.pooler(name, f))
        if torch.float16 in (self.store_dtype, self.compute_dtype):
            # float16 holds at most 65504: larger features (in the store, or already in the
            # float16 computation) would be stored as inf or NaN, silently.
            for name, r in rows.items():
                if not torch.isfinite(r).all():
                    raise InvalidArgumentError(
                        f"features of {name} exceed float16's range (|x| > 65504) and would be "
                        "stored as inf; compute and store them in float32 or bfloat16 "
                        "(dtype=, store_dtype='float32'; on the command line, --dtype bfloat16 "
                        "or float32 instead of float16)"
                    )


def run(plan: RunPlan, batches: Iterable[Batch], store: Store, start: int, total: int | None,
        progress: bool, offset: int = 0) -> int:  # fmt: skip
    """Run every batch into ``store`` (rows from ``start``; ``offset``: position of the store's
    first row in the whole source); returns the number of images done."""
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total, initial=start, disable=not progress, unit="img",
        desc=f"extract {_model_name(plan.model)}", dynamic_ncols=True,
    )  # fmt: skip
    n_done = start
    try:
        for x, ids, fps in batches:
            x = plan.prepare(x, offset + n_done)
            rows = store.rows(n_done, len(ids))
            plan.forward(x, rows)
            store.commit(n_done, ids, fps, rows)
            n_done += len(ids)
            bar.update(len(ids))
    finally:
        bar.close()
    return n_done
