"""Start-up time of the ``blt-models`` command and of ``import blt_models``.

Each case runs in a fresh interpreter (what a user's shell does), interleaved round by round so
that load from other processes on a shared machine biases every case alike; medians are
reported. ``--baseline DIR`` adds the same cases for another checkout of the package (e.g. the
previous commit, exported with ``git archive HEAD~1 blt_models | tar -x -C DIR``).

    python benchmarks/cli_startup.py --rounds 5 [--baseline /tmp/old]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CASES = {
    "python -c pass (interpreter only)": ["-c", "pass"],
    "import blt_models": ["-c", "import blt_models"],
    "blt-models --help": ["-m", "blt_models.cli", "--help"],
    "blt-models extract (argument error)": ["-m", "blt_models.cli", "extract"],
    "first use: bm.list_models()": ["-c", "import blt_models as bm; bm.list_models()"],
}


def run(args: list[str], tree: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    # cwd "/": "-c"/"-m" put the working directory first on sys.path, before PYTHONPATH.
    subprocess.run([sys.executable, *args], env=env, cwd="/", stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)  # fmt: skip
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", type=Path, default=None, help="another package checkout")
    args = parser.parse_args()
    trees = {"this tree": ROOT} | ({"baseline": args.baseline} if args.baseline else {})
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for case, argv in CASES.items():
            for label, tree in trees.items():
                times.setdefault((case, label), []).append(run(argv, tree))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.rounds} rounds, "
          "median wall time of a fresh interpreter")  # fmt: skip
    header = f"{'case':<38}" + "".join(f"{label:>12}" for label in trees)
    print(header + ("       ratio" if args.baseline else ""))
    for case in CASES:
        med = [statistics.median(times[(case, label)]) for label in trees]
        line = f"{case:<38}" + "".join(f"{m:>10.2f} s" for m in med)
        if args.baseline:
            line += f"{med[1] / med[0]:>11.1f}x"
        print(line)


if __name__ == "__main__":
    main()
