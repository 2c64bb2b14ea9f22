"""Optional dependencies: import one, or fail with the line that installs it.

Each optional module belongs to one extra of ``pyproject.toml``; ``require`` is the single
place that turns its absence into a [`MissingExtraError`][blt_models.errors.MissingExtraError] naming the
extra, the pip command, and what needed it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError

#: Importable module -> (distribution on PyPI, the extra of blt-models that brings it).
EXTRAS: dict[str, tuple[str, str]] = {
    "matplotlib": ("matplotlib", "plot"),
    "h5py": ("h5py", "extract"),
    "zarr": ("zarr", "extract"),
    "google_crc32c": ("google-crc32c", "extract"),
    "rsatoolbox": ("rsatoolbox", "analysis"),
    "scipy": ("scipy", "analysis"),
    "sklearn": ("scikit-learn", "analysis"),
}


def install_hint(extra: str) -> str:
    return f'pip install -e ".[{extra}]" in your clone of blt-models (not on PyPI yet)'


def require(module: str, purpose: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise [`MissingExtraError`][blt_models.errors.MissingExtraError] saying how to install it.

    Args:
        module: the import name, e.g. ``"h5py"``.
        purpose: what needs it, e.g. ``"writing features to HDF5 (.h5)"``.
        extra: the extra that brings it; default from ``EXTRAS``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        dist, default_extra = EXTRAS.get(module, (module, extra or ""))
        extra = extra or default_extra
        raise MissingExtraError(
            f"{purpose} needs {dist}, which is not installed ({err}). "
            f"Install it with: {install_hint(extra)}"
        ) from err
