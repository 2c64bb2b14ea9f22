"""Hard-link the PyTorch stack of the running environment into another environment's site-packages.

Usage (run with the interpreter of the environment that already has torch)::

    .venv/bin/python scripts/share_torch.py .venvs/NAME

The CUDA build of torch that pip takes on x86_64 is ~5.3 GB (torch 1.2 GB, triton 0.9 GB,
nvidia-* 3.2 GB). Each integration environment (scripts/setup_integrations.sh) would otherwise
hold its own copy, and three copies do not fit every CI disk. Hard links cost no space, and every
distribution arrives whole (its files and its ``*.dist-info`` with RECORD), so pip in the target
sees e.g. ``torch==2.14.1`` as installed and the resolver keeps it. Removing or upgrading a linked
package in the target only unlinks its names there; the source environment keeps its files.

Only files inside site-packages are linked (console scripts such as ``torchrun`` carry the source
interpreter in their shebang, so they are left out). Exits 3, linking nothing, where hard links
are impossible (another filesystem); the caller then lets pip install torch normally.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import sysconfig
from importlib.metadata import distributions
from pathlib import Path

# torch, torchvision and what makes them large; all are pinned through torch's own metadata.
SHARED = re.compile(r"(torch|torchvision|triton|nvidia-.+|cuda-.+)")


def shared_files(site: Path) -> list[Path]:
    """Paths, relative to ``site``, of every file of the shared distributions."""
    files: list[Path] = []
    for dist in distributions(path=[str(site)]):
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if SHARED.fullmatch(name) and dist.files:
            for rel in dist.files:
                path = Path(rel)
                if ".." not in path.parts and (site / path).is_file():
                    files.append(path)
    return files


def target_site_packages(venv: Path) -> Path:
    scheme = sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})
    return Path(scheme["purelib"])


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    source = Path(sysconfig.get_paths()["purelib"])
    target = target_site_packages(Path(argv[0]).resolve())
    if not target.is_dir():
        print(f"share_torch: {target} does not exist: create the venv first", file=sys.stderr)
        return 2
    files = shared_files(source)
    if not any(p.parts[0] == "torch" for p in files):
        print(f"share_torch: no torch in {source}", file=sys.stderr)
        return 2
    linked = 0
    for rel in files:
        dest = target / rel
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source / rel, dest)
        except OSError as err:
            if err.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK) and linked == 0:
                print(f"share_torch: cannot hard-link {source} into {target} ({err.strerror})")
                return 3
            raise
        linked += 1
    print(f"share_torch: linked {linked} files of the torch stack from {source} into {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
