"""What feature file integrity costs (issue 23): writing and reading with checksums and without,
in one run.

"With" is the library as it is: HDF5's Fletcher-32 / zarr's CRC-32C on every chunk, the
CRC-32C of every row in ``/checksums`` computed on write and checked on every read, and the
layout checks of ``load_features``. "Without" is the same code with the chunk filters left out
and the row checksums neither computed nor checked (a ``/checksums`` array of zeros is still
written). Features are random arrays written through the library's own writer
(``FileStore``, the path ``extract_features`` takes), so the model's time is not in the
figures: they are the store's share alone. Runs alternate with / without, best of
``--repeats``; files are read back from the page cache, so reads measure CPU cost.

Cases: unpooled maps (``[S, C, H, W]`` per layer: large rows) and average-pooled features
(``[S, C]``: small rows, where per-row overhead shows). ``--end-to-end N`` adds whole
``extract_features`` runs (``blt_bl``, 4 layers, 10 steps, 64 px, every layer at every step,
unpooled, N images) to HDF5 and zarr, with and without, so the share of a real run shows.

Usage::

    python benchmarks/integrity_benchmark.py --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blt_models.extract import integrity, load_features, stores
from blt_models.extract.stores import FileStore

CASES = {
    # 4 layers, 10 steps: BLT at 64 px (maps) and the same pooled
    "maps": {"a": (10, 64, 16, 16), "b": (10, 128, 8, 8), "c": (10, 256, 4, 4), "d": (10, 512, 2, 2)},
    "pooled": {"a": (10, 64), "b": (10, 128), "c": (10, 256), "d": (10, 512)},
}


@contextlib.contextmanager
def without_integrity() -> Iterator[None]:
    """The writer and reader with no chunk filter and no row checksums."""
    real_create = FileStore._create

    def plain_create(self: FileStore, name: str, shape: Any, dtype: Any, chunks: Any) -> None:
        if self.backend == "h5":
            import h5py

            self.arrays[name] = self.root.create_dataset(
                name, shape=shape, maxshape=(None, *shape[1:]), chunks=chunks,
                dtype=h5py.string_dtype() if dtype is str else dtype,
            )  # fmt: skip
        else:
            import zarr

            self.arrays[name] = self.root.create_array(
                name, shape=shape, chunks=chunks, dtype=dtype,
                fill_value="" if dtype is str else None, compressors=(zarr.codecs.ZstdCodec(),),
            )  # fmt: skip

    zeros = lambda values: np.zeros(len(values), dtype=np.uint32)  # noqa: E731
    saved = {
        (stores, "row_checksums"): stores.row_checksums,
        (stores, "string_checksums"): stores.string_checksums,
        (stores, "verify_rows"): stores.verify_rows,
        (integrity, "_has_checksum_filter"): integrity._has_checksum_filter,
    }
    FileStore._create = plain_create  # type: ignore[method-assign]
    stores.row_checksums = zeros  # type: ignore[assignment]
    stores.string_checksums = zeros  # type: ignore[assignment]
    stores.verify_rows = lambda *a, **k: None  # type: ignore[assignment]
    integrity._has_checksum_filter = lambda *a: True  # type: ignore[assignment]
    try:
        yield
    finally:
        FileStore._create = real_create  # type: ignore[method-assign]
        for (module, name), value in saved.items():
            setattr(module, name, value)


def metadata(shapes: dict[str, tuple[int, ...]], n: int, batch: int) -> dict[str, Any]:
    steps = list(range(next(iter(shapes.values()))[0]))
    return {
        "format": stores.FORMAT_NAME, "format_version": stores.FORMAT_VERSION,
        "layers": list(shapes), "steps": steps, "first_step": dict.fromkeys(shapes, 0),
        "feature_shapes": {k: list(v) for k, v in shapes.items()}, "dtype": "float32",
        "n_images": n, "batch_size": batch,
    }  # fmt: skip


def write(path: Path, shapes: dict[str, tuple[int, ...]], n: int, batch: int,
          data: dict[str, torch.Tensor]) -> float:  # fmt: skip
    """Seconds to create the store and write ``n`` images batch by batch."""
    t0 = time.perf_counter()
    store = FileStore(path, "h5" if path.suffix == ".h5" else "zarr")
    store.create(metadata(shapes, n, batch), shapes, n, batch, np.dtype("float32"))
    store.open()
    store.start_writing(shapes, batch, torch.float32, n)
    try:
        for start in range(0, n, batch):
            b = min(batch, n - start)
            for name, rows in store.rows(start, b).items():
                rows.copy_(data[name][start : start + b])
            ids = [str(i) for i in range(start, start + b)]
            store.commit(start, ids, [f"tensor:{i:032x}" for i in range(start, start + b)])
        store.finish()
    finally:
        store.close()
    return time.perf_counter() - t0


def read(path: Path, n: int, rng: np.random.Generator) -> dict[str, float]:
    t0 = time.perf_counter()
    eager = load_features(path)
    t_eager = time.perf_counter() - t0
    lazy = load_features(path, lazy=True)
    rows = rng.integers(0, n, 50)
    t0 = time.perf_counter()
    for name in lazy.layers:
        for i in rows:
            lazy[name][int(i)]
    t_rows = time.perf_counter() - t0
    t0 = time.perf_counter()
    last = lazy["a"][:, -1]
    t_last = time.perf_counter() - t0
    assert torch.equal(last, eager["a"][:, -1])
    return {"load": t_eager, "rows": t_rows, "last step": t_last}


def end_to_end(folder: Path, args: argparse.Namespace) -> None:
    import blt_models as bm
    from blt_models.extract import extract_features

    torch.manual_seed(0)
    model = bm.create_model("blt_bl", num_layers=4, timesteps=10).eval()
    model.pretrained_cfg = model.pretrained_cfg.replace(input_size=(3, 64, 64))
    x = torch.randn(args.end_to_end, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    print(f"\nend to end: extract_features, {args.end_to_end} images, blt_bl 4 layers, 64 px")
    for suffix in (".h5", ".zarr"):
        best = {"with": float("inf"), "without": float("inf")}
        for _ in range(args.repeats):
            for mode in ("without", "with"):
                path = folder / f"run-{mode}{suffix}"
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
                ctx = without_integrity() if mode == "without" else contextlib.nullcontext()
                with ctx:
                    t0 = time.perf_counter()
                    extract_features(model, x, out=path, batch_size=args.batch_size,
                                     progress=False).load()  # fmt: skip
                    best[mode] = min(best[mode], time.perf_counter() - t0)
        w, wo = best["with"], best["without"]
        print(f"  {suffix:5} write + load  with {w:.2f} s  without {wo:.2f} s  ratio {w / wo:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=128, help="images of the maps case")
    parser.add_argument("--pooled-images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--end-to-end", type=int, default=0, metavar="N")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="integrity-", dir=args.dir))
    try:
        if args.end_to_end:
            end_to_end(folder, args)
        for case, shapes in CASES.items():
            n = args.images if case == "maps" else args.pooled_images
            gen = torch.Generator().manual_seed(0)
            data = {k: torch.randn((n, *s), generator=gen) for k, s in shapes.items()}
            mib = sum(v.numel() * 4 for v in data.values()) / (1 << 20)
            print(f"\n{case}: {n} images, {mib:.0f} MiB of features, batch {args.batch_size}")
            for suffix in (".h5", ".zarr"):
                best: dict[str, dict[str, float]] = {"with": {}, "without": {}}
                for _ in range(args.repeats):
                    for mode in ("without", "with"):
                        path = folder / f"{case}-{mode}{suffix}"
                        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
                        ctx = without_integrity() if mode == "without" else contextlib.nullcontext()
                        with ctx:
                            times = {"write": write(path, shapes, n, args.batch_size, data)}
                            times |= read(path, n, np.random.default_rng(0))
                        for key, value in times.items():
                            best[mode][key] = min(best[mode].get(key, float("inf")), value)
                for key in best["with"]:
                    w, wo = best["with"][key], best["without"][key]
                    rate = f" ({mib / w:.0f} vs {mib / wo:.0f} MiB/s)" if key in ("write", "load") else ""
                    print(f"  {suffix:5} {key:9} with {w * 1e3:8.1f} ms  without {wo * 1e3:8.1f} ms"
                          f"  ratio {w / wo:.2f}{rate}")  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
