"""``python -m blt_models ...``: the ``blt-models`` command line (also for ``torchrun -m``)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
