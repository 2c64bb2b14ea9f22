"""Every error blt-models raises, in one place.

Each error is also the builtin a caller would reach for (``ValueError``, ``KeyError``,
``RuntimeError``, ...), so ``except ValueError`` keeps working, and all derive from
[`BltModelsError`][blt_models.errors.BltModelsError], so ``except bm.errors.BltModelsError`` catches exactly the library's own
refusals. Messages name the problem and say the fix.
"""

from __future__ import annotations

__all__ = [
    "BltModelsError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "ConfigValueError",
    "CorruptFeatureFileError",
    "ConvRNNCheckpointError",
    "ExtractionError",
    "FeatureIndexError",
    "FeatureWriteError",
    "HashMismatchError",
    "HubUploadError",
    "InputError",
    "InvalidArgumentError",
    "InvalidWeightsError",
    "KerasWeightsError",
    "MissingExtraError",
    "NoImagesError",
    "OutputInUseError",
    "OutputMismatchError",
    "PublishedFormatError",
    "SaveTargetError",
    "StepOutOfRangeError",
    "StimulusError",
    "TimestepsError",
    "UnknownLayerError",
    "UnknownModelError",
    "UnreadableCheckpointError",
    "UnreadableImageError",
    "UncheckedFeaturesWarning",
    "UnsupportedError",
    "UnverifiedWeightsWarning",
    "PartialHookWarning",
    "WeightsUnavailableError",
]


class BltModelsError(Exception):
    """Base class of every error the library raises on purpose."""


class MissingExtraError(BltModelsError, ImportError):
    """An optional dependency that is not installed; the message gives the install line."""


# ----------------------------------------------------------------------------------- models
class UnknownModelError(BltModelsError, ValueError):
    """An architecture name or ``arch.tag`` that is not registered."""


class InputError(BltModelsError, ValueError):
    """An input tensor the model cannot take (rank, dtype, channels, spatial size)."""


class TimestepsError(BltModelsError, ValueError):
    """A number of timesteps that gives no readout, or a step outside the clock."""


class ConfigValueError(BltModelsError, ValueError, TypeError):
    """A constructor or configuration value that is refused: wrong type, out of range, or a key
    the architecture does not take. The message names the field and where the value came from
    (an argument, a ``config.json`` path, a reference checkpoint's ``args``)."""


class UnsupportedError(BltModelsError, NotImplementedError):
    """A PyTorch or timm habit that a clocked model cannot follow (TorchScript scripting, a
    timm feature wrapper that needs module hooks or torch.fx); the message names the working
    alternative."""


class PartialHookWarning(UserWarning):
    """A forward hook on a submodule that a recurrent model's clock calls at several steps (or
    with part of a layer's value): hook-based tools that keep the last call (thingsvision,
    Brain-Score's generic wrapper) would read one step of one term, not the layer."""


class StimulusError(InputError):
    """A presentation protocol that cannot be built or applied (``blt_models.stimuli``)."""


# ---------------------------------------------------------------------------------- weights
class CheckpointMismatchError(BltModelsError, RuntimeError):
    """A state dict that does not fit the architecture. Attributes list the offending keys."""

    def __init__(
        self,
        what: str,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
        hint: str = "",
    ) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched

        def block(title: str, rows: list[str]) -> str:
            shown = rows[:20] + ([f"... and {len(rows) - 20} more"] if len(rows) > 20 else [])
            return f"\n  {title} ({len(rows)}):\n    " + "\n    ".join(shown) if rows else ""

        shapes = [f"{k}: checkpoint {tuple(c)} vs model {tuple(m)}" for k, c, m in mismatched]
        message = (
            f"{what} does not fit the architecture; nothing was loaded."
            + block("missing keys", missing)
            + block("unexpected keys", unexpected)
            + block("shape mismatches", shapes)
        )
        if hint:
            message += f"\n  {hint}"
        super().__init__(message)


class CheckpointNotFoundError(BltModelsError, FileNotFoundError):
    """A weight file or published folder that does not exist."""


class UnreadableCheckpointError(BltModelsError, ValueError):
    """A weight file that exists but cannot be read safely: no permission, a folder, truncated
    or corrupted, or a pickle that holds Python objects other than tensors."""


class InvalidWeightsError(BltModelsError, ValueError):
    """Weights whose values are refused: not floating point where the model is, NaN or Inf, or
    a fixed buffer (e.g. a blur filter) that was changed. The message names the tensor."""


class UnverifiedWeightsWarning(UserWarning):
    """Published weights loaded without a hash check (no hash pinned, or ``verify=False``)."""


class HashMismatchError(BltModelsError, RuntimeError):
    """A weight file whose SHA-256 is not the pinned one."""


class WeightsUnavailableError(BltModelsError, RuntimeError):
    """Weights that cannot be had: not published, or not reachable and not cached."""


class HubUploadError(BltModelsError, RuntimeError):
    """An upload to the Hub that failed (offline, unreachable, not authorised...)."""


class PublishedFormatError(BltModelsError, ValueError):
    """A folder or Hub repo that is not (or not a readable) blt-models published model."""


class SaveTargetError(BltModelsError, FileExistsError):
    """A ``save_pretrained`` (or demo) output target that must not be replaced or cannot be
    written (other files in it, not a folder, inside a file, the current directory)."""


class KerasWeightsError(BltModelsError, ValueError):
    """A Keras HDF5 weight file that cannot be read, or that matches no architecture it is read
    for (e.g. no rcnn-sat variant); the message lists what the file holds."""


class ConvRNNCheckpointError(BltModelsError, ValueError):
    """A TensorFlow checkpoint that matches none of the ConvRNNs of Nayebi et al. 2022 (or not
    the one asked for); the message lists what the checkpoint holds."""


# ------------------------------------------------------------------------------- extraction
class ExtractionError(BltModelsError, ValueError):
    """Base class of the errors of [`extract_features`][blt_models.extract_features] and [`load_features`][blt_models.load_features]."""


class UnknownLayerError(ExtractionError, KeyError):
    """A requested layer the model does not have (the message lists close matches)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class StepOutOfRangeError(TimestepsError, ExtractionError):
    """A requested step outside ``0 .. timesteps-1`` of the clock."""


class UnreadableImageError(ExtractionError):
    """An image file that is missing or that PIL cannot decode."""


class NoImagesError(ExtractionError):
    """A source (folder, list) with no images in it."""


class OutputMismatchError(ExtractionError):
    """An existing output file written with other settings (model, layers, steps, images...)."""


class CorruptFeatureFileError(OutputMismatchError):
    """A feature file that contradicts itself or fails its checksums: a layer, counter or id
    missing or of the wrong shape / dtype / type, or rows that changed since they were written
    (bit rot, swapped chunk files, a shard rewritten after the join). The message names the
    file, the field or rows, and what was expected."""


class UncheckedFeaturesWarning(UserWarning):
    """A feature file of a format before checksums (versions 2 and 3) read: its layout is
    checked, but its rows cannot be (bit rot or rows that moved would read silently).
    Extracting it again writes format 4, with checksums."""


class InvalidArgumentError(ExtractionError, TypeError):
    """An argument of the wrong type or value (``batch_size``, ``dtype``, ``pool``, source...)."""


class OutputInUseError(ExtractionError, OSError):
    """An output file that another process holds open (HDF5 file locking)."""


class FeatureWriteError(BltModelsError, OSError):
    """Writing a feature file failed (full disk, I/O error); the file keeps every complete batch
    and a re-run resumes after the last one."""


class FeatureIndexError(BltModelsError, IndexError):
    """An index into file-backed features that numpy would refuse (float, wrong-length mask,
    out of range)."""
