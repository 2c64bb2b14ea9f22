"""The ``blt-models`` command line: ``list``, ``info``, ``extract``, ``convert``, ``push``.

Each subcommand lives in one ``_cmd_*`` function registered in :func:`build_parser`; failures
print one clear line to stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_list(args: argparse.Namespace) -> int:
    import blt_models as bm

    names = bm.list_pretrained(args.pattern) if args.pretrained else bm.list_models(args.pattern)
    print("\n".join(names))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import blt_models as bm
    from blt_models._registry import list_pretrained_cfgs, split_model_name_tag

    model = bm.create_model(args.name)
    arch, _ = split_model_name_tag(args.name)
    n_params = sum(p.numel() for p in model.parameters())
    timesteps = model.timesteps
    first = model.first_steps(timesteps)
    rows = [
        ("architecture", arch),
        ("class", type(model).__name__),
        ("parameters", f"{n_params:,}"),
        ("in_chans", model.in_chans),
        ("num_classes", model.num_classes),
        ("timesteps", timesteps),
        ("unroll", getattr(model, "unroll", "-")),
        ("readout steps", ", ".join(map(str, model.readout_steps(timesteps)))),
        ("layers", ", ".join(f"{n} (from step {first[n]})" for n in model.layer_names)),
    ]
    tags = list_pretrained_cfgs(f"{arch}.*")
    for tag in tags:
        cfg = bm.get_pretrained_cfg(*split_model_name_tag(tag))
        where = cfg.hf_hub_id or cfg.url or (f"package:{cfg.file}" if cfg.file else "no published weights")
        rows.append((f"tag {tag}", where))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from blt_models.demo import run_demo

    run_demo(args.model, args.out, pretrained=args.pretrained)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blt-models", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list architectures (or pretrained tags)")
    p.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'blt_b*'")
    p.add_argument("--pretrained", action="store_true", help="list arch.tag names with weights")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="architecture, parameters, timing and tags of a model")
    p.add_argument("name", help="architecture or arch.tag")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("demo", help="run the shipped sample images through a model; plot its dynamics")
    p.add_argument("--model", default="blt_bl", help="architecture or arch.tag (default: blt_bl)")
    p.add_argument("--pretrained", action="store_true", help="load the tag's weights")
    p.add_argument("--out", default="outputs/demo", help="folder for activity.png")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # one clear line, no traceback, for expected user errors
        print(f"blt-models {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
