"""Any zoo model as a Brain-Score ``BrainModel``, with time bins from the model's own clock.

Brain-Score's generic PyTorch wrapper hooks modules and keeps the last call of each, so it sees one
step of a recurrent model. Here the model's clock is the time axis: clock step ``t`` is the
interval ``[onset_ms + t * step_ms, onset_ms + (t + 1) * step_ms)`` after stimulus onset, and a
layer has responses only from its ``first_step`` (no activity is claimed before the image reaches
it) to its last computed step. Requested recording bins are mapped onto those steps by
Brain-Score's own temporal alignment (``TemporalAligned`` / ``assembly_time_align``); a bin the
clock does not cover is an error that says how many steps it needs.

>>> import blt_models as bm
>>> from blt_models.integrations.brainscore import to_brain_model
>>> model = bm.create_model("cornet_rt.imagenet", pretrained=True)
>>> brain = to_brain_model(model, "cornet_rt", region_layer_map={"V4": "V4", "IT": "IT"},
...                        step_ms=10, onset_ms=70, visual_degrees=8)
>>> brain.start_recording("IT", time_bins=[(100, 110), (110, 120)])
>>> responses = brain.look_at(stimulus_set)   # NeuroidAssembly: presentation x neuroid x time_bin

Requires the ``brainscore`` extra (brainscore-vision 2.4) in its own environment, since its
pins (e.g. ``numpy<2``) do not fit others: in a clone of blt-models,
``pip install "torch==2.14.1" "torchvision==0.29.1" -e ".[brainscore]"`` in a new virtual
environment (``bash scripts/setup_integrations.sh brainscore`` builds ``.venvs/brainscore``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from brainscore_core.supported_data_standards.brainio.assemblies import NeuroidAssembly
from brainscore_vision.model_helpers.brain_transformation import TemporalAligned
from brainscore_vision.model_helpers.brain_transformation.behavior import (
    BehaviorArbiter,
    LabelBehavior,
    ProbabilitiesMapping,
)
from brainscore_vision.model_helpers.brain_transformation.neural import LayerMappedModel
from brainscore_vision.model_interface import BrainModel

from .._clock import ClockedModel
from ..data import create_transform
from ..errors import InputError, TimestepsError

__all__ = ["ClockActivations", "BltBrainModel", "to_brain_model", "BEHAVIOR_LAYERS"]

#: Pseudo-layers for behaviour, read at the last readout step (no time axis): the logits, and the
#: pooled features the classifier reads.
BEHAVIOR_LAYERS = ("logits", "pre_logits")


class ClockActivations:
    """Brain-Score's "activations model" for a zoo model: ``(stimuli, layers) -> NeuroidAssembly``.

    Layers of ``model.layer_names`` come back as ``presentation x neuroid x time_bin`` with one
    time bin per clock step at which the layer is active (``first_step .. last step``), in
    milliseconds; the pseudo-layers ``"logits"`` and ``"pre_logits"`` come back as
    ``presentation x neuroid`` at the last readout step (behaviour). Neuroids are the flattened
    ``C x H x W`` map of a layer (``neuroid_id`` ``"layer.c.y.x"``).

    Args:
        model: a zoo model (put in eval mode).
        identifier: Brain-Score identifier of the model.
        step_ms: duration of one clock step in milliseconds.
        onset_ms: latency of step 0 after stimulus onset, in milliseconds.
        timesteps: clock length (default ``model.timesteps``).
        batch_size, device: how images are run.
    """

    def __init__(
        self,
        model: ClockedModel,
        identifier: str,
        step_ms: float = 10.0,
        onset_ms: float = 0.0,
        timesteps: int | None = None,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
    ) -> None:
        if not (isinstance(step_ms, (int, float)) and step_ms > 0):
            raise ValueError(f"step_ms must be a positive number of milliseconds; got {step_ms!r}")
        if not (isinstance(onset_ms, (int, float)) and onset_ms >= 0):
            raise ValueError(f"onset_ms must be >= 0 milliseconds; got {onset_ms!r}")
        self.model = model.eval().to(device)
        self.identifier = identifier
        self.step_ms = float(step_ms)
        self.onset_ms = float(onset_ms)
        self.timesteps = model._resolve_timesteps(timesteps)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.transform = create_transform(model)

    # ------------------------------------------------------------------------------- timing
    def step_bin(self, t: int) -> tuple[float, float]:
        """``(start_ms, end_ms)`` of clock step ``t``."""
        return (self.onset_ms + t * self.step_ms, self.onset_ms + (t + 1) * self.step_ms)

    def active_steps(self, layer: str) -> range:
        """Clock steps at which ``layer`` has responses: its first step to its last computed."""
        name = self.model.resolve_layer(layer)
        first = self.model.first_steps(self.timesteps)[name]
        last = self.model.last_steps(self.timesteps)[name]
        return range(first, last + 1)

    def check_time_bins(self, layer: str, time_bins: Sequence[Sequence[float]]) -> None:
        """Raise [`TimestepsError`][blt_models.errors.TimestepsError] if a bin lies outside the steps at which ``layer`` is
        active (before the image reaches it, or beyond the clock). The advice is computed from
        the earliest start and the latest end of all the bins, so following it covers them all."""
        steps = self.active_steps(layer)
        start, end = self.step_bin(steps[0])[0], self.step_bin(steps[-1])[1]
        bins = [(float(b[0]), float(b[1])) for b in time_bins]
        for lo, hi in bins:
            if not lo < hi:
                raise ValueError(f"time bin ({lo:g}, {hi:g}) must have start < end (milliseconds)")
        if not bins:
            return
        lo, earliest_end = min(bins)
        if lo < start:
            raise TimestepsError(
                f"time bin ({lo:g}, {earliest_end:g}) ms starts before {layer!r} has any response: "
                f"the image reaches it at step {steps[0]}, i.e. {start:g} ms (onset_ms="
                f"{self.onset_ms:g} + {steps[0]} x step_ms={self.step_ms:g}). Request bins "
                f"from {start:g} ms on, or map the region to an earlier layer / lower onset_ms."
            )
        latest_start, hi = max(bins, key=lambda b: b[1])
        if hi > end:
            need = math.ceil((hi - self.onset_ms) / self.step_ms)
            last_possible = steps[-1] == self.timesteps - 1
            fix = (
                f"Create the brain model with timesteps={need} (or longer steps: step_ms >= "
                f"{(hi - self.onset_ms) / self.timesteps:g}); for a generated plugin, "
                f"`blt-models brainscore-plugin ... --timesteps {need}`."
                if last_possible
                else f"{layer!r} finishes at step {steps[-1]} whatever the clock length "
                f"(a fixed-clock area); request bins up to {end:g} ms."
            )
            raise TimestepsError(
                f"time bin ({latest_start:g}, {hi:g}) ms ends after the clock: {layer!r} has "
                f"responses until {end:g} ms (step {steps[-1]} of {self.timesteps}); the latest "
                f"requested bin needs {need} steps of {self.step_ms:g} ms after onset_ms="
                f"{self.onset_ms:g}. {fix}"
            )

    # ------------------------------------------------------------------------------- running
    def _paths_and_meta(self, stimuli: Any) -> tuple[list[str], dict[str, Any]]:
        if hasattr(stimuli, "get_stimulus"):  # a Brain-Score StimulusSet
            ids = [str(i) for i in stimuli["stimulus_id"].values]
            paths = [str(stimuli.get_stimulus(i)) for i in stimuli["stimulus_id"].values]
            meta = {
                col: stimuli[col].values
                for col in stimuli.columns
                if col != "stimulus_id" and not str(col).startswith("_")
            }
            meta["stimulus_id"] = np.array(ids, dtype=object)
            return paths, meta
        paths = [str(p) for p in stimuli]
        return paths, {"stimulus_id": np.array(paths, dtype=object), "stimulus_path": paths}

    def _images(self, paths: list[str]) -> torch.Tensor:
        from PIL import Image

        imgs = []
        for p in paths:
            with Image.open(p) as im:
                imgs.append(self.transform(im))
        return torch.stack(imgs)

    @torch.no_grad()
    def _run(self, paths: list[str], layers: list[str]) -> dict[str, np.ndarray]:
        """``{layer: [N, S, C*H*W]}`` over the active steps; behaviour layers ``[N, K]``."""
        if "logits" in layers and self.model.num_classes == 0:
            # forward_timesteps' "logits" are then the pooled features: not class scores.
            raise InputError(
                f"'logits' requested from {self.model._display_name()}, which has no classifier "
                "(num_classes=0: pruned, features_only, or reset_classifier(0)); request "
                "'pre_logits' for its pooled features, or build it with its classifier."
            )
        feature_layers = [ly for ly in layers if ly not in BEHAVIOR_LAYERS]
        canonical = {ly: self.model.resolve_layer(ly) for ly in feature_layers}
        capture = list(dict.fromkeys([*canonical.values(), self.model.head_layer]))
        chunks: dict[str, list[np.ndarray]] = {ly: [] for ly in layers}
        last_readout = self.model.readout_steps(self.timesteps)[-1]
        for i in range(0, len(paths), self.batch_size):
            x = self._images(paths[i : i + self.batch_size]).to(self.device)
            out = self.model.forward_timesteps(x, timesteps=self.timesteps, layers=capture)
            for ly in feature_layers:
                steps = list(self.active_steps(ly))
                feat = out.features[canonical[ly]][steps]  # [S, B, C, H, W]
                feat = feat.transpose(0, 1).reshape(x.shape[0], len(steps), -1)
                chunks[ly].append(feat.float().cpu().numpy())
            if "logits" in layers:
                chunks["logits"].append(out.logits[-1].float().cpu().numpy())
            if "pre_logits" in layers:
                head = out.features[self.model.head_layer][last_readout]
                pooled = self.model.forward_head(head, pre_logits=True)
                chunks["pre_logits"].append(pooled.float().cpu().numpy())
        return {ly: np.concatenate(c) for ly, c in chunks.items()}

    def _neuroid_coords(self, layer: str, width: int) -> dict[str, Any]:
        if layer in BEHAVIOR_LAYERS:
            idx = np.arange(width)
            return {
                "neuroid_id": ("neuroid", [f"{layer}.{i}" for i in idx]),
                "neuroid_num": ("neuroid", idx),
                "layer": ("neuroid", [layer] * width),
            }
        info = next(
            d for d in self.model.feature_info if d["module"] == self.model.resolve_layer(layer)
        )
        c = int(info["num_chs"])
        hw = width // c
        idx = np.arange(width)
        return {
            "neuroid_id": ("neuroid", [f"{layer}.{i}" for i in idx]),
            "neuroid_num": ("neuroid", idx),
            "channel": ("neuroid", idx // hw),
            "layer": ("neuroid", [layer] * width),
        }

    def __call__(
        self,
        stimuli: Any,
        layers: Sequence[str],
        number_of_trials: int = 1,
        require_variance: bool = False,
    ) -> NeuroidAssembly:
        """Responses of ``layers`` to ``stimuli`` (a StimulusSet or a list of image paths).

        The model is deterministic, so ``number_of_trials`` and ``require_variance`` change
        nothing (accepted for Brain-Score's interface).
        """
        layers = list(layers)
        paths, meta = self._paths_and_meta(stimuli)
        data = self._run(paths, layers)
        presentation = {k: ("presentation", v) for k, v in meta.items()}
        behavior = [ly for ly in layers if ly in BEHAVIOR_LAYERS]
        if behavior:
            if len(behavior) != len(layers):
                raise ValueError("request behaviour layers (logits, pre_logits) on their own")
            values = np.concatenate([data[ly] for ly in layers], axis=1)
            coords: dict[str, Any] = dict(presentation)
            parts = [self._neuroid_coords(ly, data[ly].shape[1]) for ly in layers]
            for key in parts[0]:
                coords[key] = ("neuroid", np.concatenate([np.asarray(p[key][1]) for p in parts]))
            return NeuroidAssembly(values, coords=coords, dims=["presentation", "neuroid"])
        steps = {ly: list(self.active_steps(ly)) for ly in layers}
        if len({tuple(s) for s in steps.values()}) > 1:
            raise ValueError(
                f"layers {layers} are active at different steps ({steps}); record them one at a "
                "time (one layer per region) so that every neuroid has the same time bins."
            )
        bins = [self.step_bin(t) for t in steps[layers[0]]]
        values = np.concatenate([data[ly] for ly in layers], axis=2)  # [N, S, neuroids]
        values = values.transpose(0, 2, 1)  # presentation x neuroid x time_bin
        coords = dict(presentation)
        parts = [self._neuroid_coords(ly, data[ly].shape[2]) for ly in layers]
        for key in parts[0]:
            coords[key] = ("neuroid", np.concatenate([np.asarray(p[key][1]) for p in parts]))
        coords["time_bin_start"] = ("time_bin", [b[0] for b in bins])
        coords["time_bin_end"] = ("time_bin", [b[1] for b in bins])
        return NeuroidAssembly(values, coords=coords, dims=["presentation", "neuroid", "time_bin"])


class BltBrainModel(BrainModel):
    """A zoo model committed to brain regions, time bins and behaviour (see [`to_brain_model`][blt_models.integrations.brainscore.to_brain_model]).

    ``start_recording(region, time_bins)`` then ``look_at(stimuli)`` give the region's layer at the
    clock steps that cover the bins, aligned by Brain-Score's ``TemporalAligned``;
    ``start_task(BrainModel.Task.label, "imagenet")`` / ``Task.probabilities`` read the last
    readout (the logits / the pooled features the classifier reads).
    """

    def __init__(
        self,
        activations: ClockActivations,
        region_layer_map: Mapping[str, str],
        visual_degrees: float = 8,
        behavioral_readout_layer: str = "pre_logits",
    ) -> None:
        if not region_layer_map:
            raise ValueError(
                "region_layer_map is required, e.g. {'V1': 'layer1', 'IT': 'layer5'}: layer "
                "selection by Brain-Score's public benchmarks needs downloads and is not done here."
            )
        for region, layer in region_layer_map.items():
            if not isinstance(layer, str):
                raise ValueError(
                    f"region {region!r} maps to {layer!r}; map each region to one layer name "
                    "(layers become active at different steps, so they cannot share time bins)."
                )
            activations.model.resolve_layer(layer)  # unknown names fail now, with suggestions
        self.activations_model = activations
        self.region_layer_map = dict(region_layer_map)
        self._visual_degrees = visual_degrees
        layer_model = LayerMappedModel(
            identifier=activations.identifier,
            activations_model=activations,
            region_layer_map=self.region_layer_map,
            visual_degrees=visual_degrees,
        )
        self.layer_model = TemporalAligned(layer_model)
        self.behavior_model = BehaviorArbiter(
            {
                BrainModel.Task.label: LabelBehavior(activations.identifier, activations),
                BrainModel.Task.probabilities: ProbabilitiesMapping(
                    activations.identifier, activations, behavioral_readout_layer
                ),
            }
        )
        self.do_behavior = False
        self._recording: tuple[str, list] | None = None

    @property
    def identifier(self) -> str:
        return self.activations_model.identifier

    def visual_degrees(self) -> float:
        return self._visual_degrees

    def start_task(self, task: Any, *args: Any, **kwargs: Any) -> None:
        if task == BrainModel.Task.passive:
            self.do_behavior = False
            return
        if task not in (BrainModel.Task.label, BrainModel.Task.probabilities):
            raise NotImplementedError(
                f"task {task!r} is not supported: use passive, label or probabilities"
            )
        self.behavior_model.start_task(task, *args, **kwargs)
        self.do_behavior = True

    def start_recording(self, recording_target: str, time_bins: Sequence[Sequence[float]]) -> None:
        if recording_target not in self.region_layer_map:
            raise KeyError(
                f"no layer is committed to region {recording_target!r}; regions: "
                f"{', '.join(self.region_layer_map)} (pass region_layer_map=)"
            )
        bins = [tuple(float(v) for v in b) for b in time_bins]
        self.activations_model.check_time_bins(self.region_layer_map[recording_target], bins)
        self._recording = (recording_target, bins)
        self.layer_model.start_recording(recording_target, bins)

    def look_at(
        self, stimuli: Any, number_of_trials: int = 1, require_variance: bool = False
    ) -> Any:
        if self.do_behavior:
            return self.behavior_model.look_at(
                stimuli, number_of_trials=number_of_trials, require_variance=require_variance
            )
        if self._recording is None:
            raise RuntimeError("call start_recording(region, time_bins) before look_at")
        return self.layer_model.look_at(stimuli, number_of_trials=number_of_trials)


def to_brain_model(
    model: ClockedModel,
    identifier: str,
    region_layer_map: Mapping[str, str],
    step_ms: float = 10.0,
    onset_ms: float = 0.0,
    visual_degrees: float = 8,
    timesteps: int | None = None,
    behavioral_readout_layer: str = "pre_logits",
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> BltBrainModel:
    """Commit a zoo model to Brain-Score: regions, milliseconds per clock step, visual degrees.

    Args:
        model: any zoo model (its ``pretrained_cfg`` gives the preprocessing).
        identifier: Brain-Score model identifier.
        region_layer_map: ``{region: layer}``, e.g. ``{"V4": "V4", "IT": "IT"}`` (layer names or
            reference aliases; one layer per region).
        step_ms: milliseconds per clock step (a modelling choice; 10 ms is common for BLT).
        onset_ms: latency of clock step 0 after stimulus onset.
        visual_degrees: degrees of visual angle the model's input spans.
        timesteps: clock length (default ``model.timesteps``); bins beyond
            ``onset_ms + timesteps * step_ms`` are refused with the steps needed.
        behavioral_readout_layer: ``"pre_logits"`` (pooled features at the last readout, for
            ``Task.probabilities``) or ``"logits"``.
    """
    activations = ClockActivations(
        model, identifier, step_ms=step_ms, onset_ms=onset_ms, timesteps=timesteps,
        batch_size=batch_size, device=device,
    )  # fmt: skip
    return BltBrainModel(activations, region_layer_map, visual_degrees, behavioral_readout_layer)
