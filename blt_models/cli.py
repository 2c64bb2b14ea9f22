"""The ``blt-models`` command line: ``list``, ``info``, ``demo``, ``extract``, ``convert``, ``push``,
``prefetch``, ``brainscore-plugin``.

Each subcommand lives in one ``_cmd_*`` function registered in ``build_parser``, which
imports what it needs (torch, the model families) inside the function: ``--help`` and argument
errors answer without importing torch. Failures print one clear line to stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
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
        where = (
            cfg.hf_hub_id
            or cfg.url
            or (f"package:{cfg.file}" if cfg.file else "no published weights")
        )
        rows.append((f"tag {tag}", where))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from blt_models.demo import run_demo

    run_demo(args.model, args.out, pretrained=args.pretrained)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    import torch

    import blt_models as bm
    from blt_models._convert import convert_checkpoint

    overrides = {
        k: v for k, v in (("timesteps", args.timesteps), ("unroll", args.unroll)) if v is not None
    }
    if args.cumulative_readout:
        overrides["cumulative_readout"] = True
    print(f"reading {args.src}")
    model, how = convert_checkpoint(args.src, arch=args.arch, **overrides)
    n_tensors = len(model.state_dict())
    print(f"architecture: {how}")
    print(
        f"loaded {n_tensors} tensors strictly ({sum(p.numel() for p in model.parameters()):,} parameters)"
    )
    meta = {k: v for k, v in (("license", args.license), ("training_data", args.training_data),
                              ("description", args.description)) if v is not None}  # fmt: skip
    out = bm.save_pretrained(model, args.out, repo_id=args.repo_id, **meta)
    print(f"wrote {out}: model.safetensors, config.json, README.md")
    reloaded = bm.create_model(f"local-dir:{out}", pretrained=True)
    ref, got = model.state_dict(), reloaded.state_dict()
    if ref.keys() != got.keys() or not all(torch.equal(ref[k], got[k]) for k in ref):
        raise RuntimeError(f"{out} does not reload to the converted weights")
    sha = getattr(reloaded.pretrained_cfg, "sha256", None)
    print(f"verified: local-dir:{out} reloads to identical weights (sha256 {sha})")
    return 0


def _cmd_brainscore_plugin(args: argparse.Namespace) -> int:
    from blt_models.errors import ConfigValueError
    from blt_models.integrations.brainscore_plugin import write_brainscore_plugin

    regions: dict[str, str] = {}
    for item in args.region:
        region, sep, layer = item.partition("=")
        if not sep or not region or not layer:
            raise ConfigValueError(f"--region expects REGION=LAYER (e.g. IT=layer5); got {item!r}")
        if region in regions:
            raise ConfigValueError(
                f"--region {region} is given twice ({region}={regions[region]}, {item}): commit "
                "each region to one layer."
            )
        regions[region] = layer
    out = write_brainscore_plugin(
        args.name, args.out_dir, region_layer_map=regions or None, identifier=args.identifier,
        step_ms=args.step_ms, onset_ms=args.onset_ms, visual_degrees=args.visual_degrees,
        timesteps=args.timesteps,
    )  # fmt: skip
    print(f"wrote the Brain-Score plugin {out}: __init__.py, model.py, region_layer_map/, test.py")
    print("add it to brainscore_vision/models/ in a clone of github.com/brain-score/vision")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from blt_models._published import check_folder, push_folder

    config = check_folder(args.dir)
    print(f"checked {args.dir}: {config['architecture']}, sha256 {config['weights'].get('sha256')}")
    print(f"uploading to the Hub repo {args.repo} ...")
    url = push_folder(
        args.dir, args.repo, token=args.token, private=args.private or None, revision=args.revision,
        commit_message=args.message, create_pr=args.create_pr, endpoint=args.endpoint,
    )  # fmt: skip
    print(f"done: {url}")
    print(f'load it with: blt_models.create_model("hf-hub:{args.repo}", pretrained=True)')
    return 0


def _cmd_prefetch(args: argparse.Namespace) -> int:
    import blt_models as bm
    from blt_models._published import read_location

    names = bm.list_pretrained() if args.all else list(args.names)
    if not names:
        raise ValueError("name at least one model (e.g. blt_vs.imagenet), or pass --all")
    failed = 0
    for name in names:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", bm.UnverifiedWeightsWarning)
                loc = read_location(name, fetch_weights=True)
        except bm.BltModelsError as err:
            failed += 1
            print(f"{name}: FAILED: {err}", file=sys.stderr)
            continue
        assert loc.weights is not None
        size = loc.weights.stat().st_size / 2**20
        sha = getattr(loc.cfg, "sha256", None)
        unverified = any(issubclass(w.category, bm.UnverifiedWeightsWarning) for w in caught)
        status = "UNVERIFIED: no SHA-256 is pinned for it" if unverified else "verified"
        print(f"{name}: {loc.weights} ({size:.1f} MiB, sha256 {sha}, {status})")
    if failed:
        print(f"{failed} of {len(names)} failed", file=sys.stderr)
    return 1 if failed else 0


# ------------------------------------------------------------------------------------ extract
def _parse_steps(text: str | None) -> list[int] | None:
    """``"all"``/None, ``"0-9"``, ``"0,3,9"``, ``"-1"``, or a mix (``"0-3,9"``)."""
    if text is None or text == "all":
        return None
    steps: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-") if not part.startswith("-") else (part, "", "")
        try:
            first, last = (int(lo), int(hi)) if sep else (int(part), int(part))
        except ValueError:
            raise ValueError(
                f"--steps: cannot read {part!r} (use e.g. 'all', '0-9', '0,4,9', '-1')"
            ) from None
        if last < first:
            raise ValueError(
                f"--steps: the range {part!r} runs backwards; write it from the first step to "
                f"the last, '{last}-{first}'"
            )
        steps += list(range(first, last + 1))
    return steps


def _positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (e.g. ``--img-size``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1); got {value}")
    return value


def _parse_model_args(items: Sequence[str]) -> dict:
    import ast

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-arg expects KEY=VALUE; got {item!r}")
        if key in out:
            raise ValueError(
                f"--model-arg {key} is given twice ({key}={out[key]!r} and {item!r}); give each "
                "argument once"
            )
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _read_protocol(path: str) -> object:
    """The presentation protocol in the JSON file ``path`` (the ``to_dict`` form of a protocol of
    ``blt_models.stimuli``, e.g. ``{"protocol": "BackwardMask", "timesteps": 8, "soa": 2}``)."""
    import json

    from blt_models.stimuli import StimulusError, protocol_from_dict

    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except OSError as err:
        raise StimulusError(f"--stimulus: cannot read {path!r} ({err.strerror or err})") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise StimulusError(
            f"--stimulus: {path!r} is not a JSON file ({err}); write the protocol's to_dict(), "
            'e.g. {"protocol": "BackwardMask", "timesteps": 8, "soa": 2}'
        ) from None
    try:
        return protocol_from_dict(record)
    except StimulusError as err:
        raise StimulusError(f"--stimulus {path!r}: {err}") from None


def _cmd_extract(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    if "torch" not in sys.modules:
        # PyTorch's own switch for transparent huge pages on large CPU tensors, read once at
        # torch's first allocation: an extraction's activations and result then fault in 2 MiB
        # at a time instead of 4 KiB (fp32 4-8% faster at 224 px on the 2-core dev machine;
        # bf16 within noise: benchmarks/RESULTS.md).
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    import torch

    import blt_models as bm
    from blt_models._registry import split_model_name_tag
    from blt_models.extract import extract_features

    # A name with a tag means its weights (unless a checkpoint file is given instead).
    tagged = not args.model.startswith(("hf-hub:", "local-dir:")) and bool(
        split_model_name_tag(args.model)[1]
    )
    pretrained = args.pretrained or (tagged and args.checkpoint is None) or None
    stimulus = None if args.stimulus is None else _read_protocol(args.stimulus)
    # Untrained weights are drawn from --seed: the same in every torchrun process and on a
    # re-run, so shards join and an interrupted extraction resumes.
    torch.manual_seed(args.seed)
    model = bm.create_model(
        args.model, pretrained=pretrained, checkpoint_path=args.checkpoint,
        in_chans=args.in_chans, **_parse_model_args(args.model_arg),
    )  # fmt: skip
    if args.img_size is not None and isinstance(model.pretrained_cfg, bm.PretrainedCfg):
        model.pretrained_cfg = model.pretrained_cfg.replace(
            input_size=(model.in_chans, args.img_size, args.img_size)
        )
    source: object = args.source
    src = Path(args.source)
    if src.is_file() and src.suffix.lower() == ".txt":  # one image path per line
        base = src.parent
        lines = [ln.strip() for ln in src.read_text().splitlines() if ln.strip()]
        source = [p if Path(p).is_absolute() else str(base / p) for p in lines]
    elif src.is_file():
        source = [str(src)]
    layers = args.layers if args.layers else "all"
    if len(layers) == 1 and "," in layers[0]:
        layers = [x for x in layers[0].split(",") if x]
    if layers == ["all"]:
        layers = "all"
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per process
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    t0 = time.perf_counter()
    res = extract_features(
        model, source, layers=layers, steps=_parse_steps(args.steps), out=args.out,
        batch_size=args.batch_size, device=device, dtype=args.dtype, pool=args.pool,
        num_workers=args.num_workers, progress=not args.no_progress, timesteps=args.timesteps,
        overwrite=args.overwrite, rank=args.rank, world_size=args.world_size,
        compile=args.compile, stimulus=stimulus,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    meta = res.metadata
    out = Path(args.out)
    if meta.get("shard"):  # this rank finished first; the last one writes the join
        shard = meta["shard"]
        rows = shard["rows"]
        done = f"images {rows[0]} .. {rows[1] - 1} done" if rows[1] > rows[0] else "no images"
        print(
            f"rank {shard['rank']} of {shard['world_size']}: {done}; {out} is written when "
            "every rank is done"
        )
        return 0
    if args.rank is None and os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun every rank has the joined result; rank 0 reports it
    parts = [out, out.with_name(out.name + ".shards")] if meta.get("shards") else [out]
    size = sum(
        sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        if p.is_dir()
        else p.stat().st_size
        for p in parts
    )
    rows = [
        ("model", meta["model"]["name"]),
        ("images", f"{res.num_images}" + ("" if meta.get("complete") else " (incomplete)")),
        ("steps", ", ".join(map(str, res.steps.tolist())) + f" of {meta['timesteps']}"),
        ("pool", args.pool or "none"),
        *[
            (
                f"  {name}",
                f"{list(t.shape)} {meta['dtype']}, active from step {res.first_step[name]}",
            )
            for name, t in res.features.items()
        ],
        ("output", f"{out} ({size / 2**20:.1f} MiB)"),
        (
            "time",
            f"{elapsed:.1f} s ({res.num_images / max(elapsed, 1e-9):.1f} images/s incl. start-up)",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _add_extract_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="per-layer, per-step features of a stimulus set to an HDF5 file or zarr store",
        description="Run MODEL on every image of SOURCE and write the requested layers at the "
        "requested clock steps to OUT (.h5/.hdf5 or .zarr). Re-running on the same OUT resumes.",
    )
    p.add_argument("model", help="architecture or arch.tag, e.g. blt_bl or blt_bl.vggface2")
    p.add_argument("source", help="folder of images, one image, or a .txt list of image paths")
    p.add_argument("--layers", nargs="+", default=None, help="layer names (default: all)")
    p.add_argument("--steps", default=None, help="'all' (default), '0-9', '0,4,9', '-1'")
    p.add_argument("--out", required=True, help="output file: .h5 / .hdf5 (HDF5) or .zarr")
    p.add_argument("--pool", default=None, help="none (default), avg, or random:WIDTH[:SEED]")
    p.add_argument("--timesteps", type=int, default=None, help="clock length (default: model's)")
    p.add_argument("--stimulus", default=None, metavar="PROTOCOL.json",
                   help="a presentation protocol applied to every image: a JSON file holding its "
                   "to_dict() form, e.g. {\"protocol\": \"BackwardMask\", \"timesteps\": 8, "
                   "\"soa\": 2} (blt_models.stimuli; it sets the clock length)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=0, help="image-loading worker processes")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"])
    p.add_argument("--pretrained", action="store_true",
                   help="load the default tag's published weights (a name with a tag, e.g. "
                   "blt_bl_tiny.fashion_mnist, always loads its own)")  # fmt: skip
    p.add_argument("--checkpoint", default=None, help="local weight file")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random initialisation of an untrained model (default 0)")  # fmt: skip
    p.add_argument("--in-chans", type=int, default=None, help="input channels (1 for grayscale)")
    p.add_argument("--img-size", type=_positive_int, default=None,
                   help="input side in pixels (default: the model's)")  # fmt: skip
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="architecture argument, e.g. num_layers=4 (repeatable)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace OUT instead of resuming")
    p.add_argument("--compile", action="store_true",
                   help="run the clock through torch.compile (minutes to compile; pays on long "
                   "runs and GPUs)")  # fmt: skip
    p.add_argument("--rank", type=int, default=None,
                   help="this process's share of SOURCE (with --world-size; default: torchrun's "
                   "RANK, else one process)")  # fmt: skip
    p.add_argument("--world-size", type=int, default=None,
                   help="number of processes sharing SOURCE, e.g. a job array's size "
                   "(default: torchrun's WORLD_SIZE)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_extract)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blt-models")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list architectures (or pretrained tags)")
    p.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'blt_b*'")
    p.add_argument("--pretrained", action="store_true", help="list arch.tag names with weights")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="architecture, parameters, timing and tags of a model")
    p.add_argument("name", help="architecture or arch.tag")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser(
        "demo", help="run the shipped sample images through a model; plot its dynamics"
    )
    p.add_argument(
        "--model",
        default="blt_bl_tiny.fashion_mnist",
        help="architecture or arch.tag (default: the packaged trained model)",
    )
    p.add_argument(
        "--pretrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="load the tag's weights (default: yes for a tag with weights)",
    )
    p.add_argument("--out", default="outputs/demo", help="folder for activity.png")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "convert",
        help="convert a reference BLT training checkpoint, an official-layout file (e.g. CORnet), "
        "a published rcnn-sat Keras .h5 file or a ConvRNN TensorFlow checkpoint into the "
        "published format",
        description="Write SRC as a published folder OUT (model.safetensors, config.json, README.md). "
        "The architecture is read from the file (reference 'args', an 'arch' entry, or the layers "
        "of an rcnn-sat Keras .h5 file, the variables of a ConvRNN TensorFlow checkpoint) or given "
        "with --arch; the weights are loaded strictly and the result is verified by reloading it.",
    )
    p.add_argument(
        "src",
        help="checkpoint file (.pth / .pt / .safetensors / Keras .h5), or a TensorFlow checkpoint "
        "(its folder or prefix .../model.ckpt)",
    )
    p.add_argument("out", help="output folder (created; an existing published folder is replaced)")
    p.add_argument(
        "--arch", help="architecture, when the file does not record it (see 'blt-models list')"
    )
    p.add_argument("--timesteps", type=int, help="default number of clock steps of the saved model")
    p.add_argument(
        "--unroll", choices=("biological", "standard"), help="unrolling of recurrent models"
    )
    p.add_argument(
        "--cumulative-readout",
        action="store_true",
        help="rcnn_bl: record cumulative_readout=True (logits at step t sum the readouts of 0..t)",
    )
    p.add_argument("--license", help="license of the weights (a Hub license id, e.g. cc-by-4.0)")
    p.add_argument("--training-data", help="what the weights were trained on")
    p.add_argument("--description", help="one paragraph for the model card")
    p.add_argument("--repo-id", help="Hub repo the card's usage snippet names (org/name)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser(
        "push",
        help="upload a published folder to the Hugging Face Hub",
        description="Check DIR (config, architecture, weights hash) and upload it to the Hub repo "
        "REPO with huggingface_hub (log in first with 'hf auth login', or set HF_TOKEN, or pass --token).",
    )
    p.add_argument("dir", help="folder written by save_pretrained or 'blt-models convert'")
    p.add_argument("repo", help="Hub repo id, org/name (created if needed)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", help="branch to push to")
    p.add_argument("--message", help="commit message")
    p.add_argument(
        "--create-pr", action="store_true", help="open a pull request instead of committing"
    )
    p.add_argument("--token", help="Hub token (default: huggingface_hub's login)")
    p.add_argument("--endpoint", help="Hub endpoint (default: huggingface_hub's, HF_ENDPOINT)")
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser(
        "prefetch",
        help="download and verify published weights into the normal caches (for offline nodes)",
        description="Download the weights of each NAME (arch.tag, arch for its default tag, "
        "hf-hub:org/repo) into the caches create_model reads (the Hugging Face cache: HF_HOME / "
        "HF_HUB_CACHE; torch.hub's: TORCH_HOME) and check their SHA-256. Run it where there is "
        "internet, then share or copy the caches to compute nodes without it (and set "
        "HF_HUB_OFFLINE=1 there).",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="models to fetch")
    p.add_argument(
        "--all", action="store_true", help="every name that 'blt-models list --pretrained' prints"
    )
    p.set_defaults(func=_cmd_prefetch)

    p = sub.add_parser(
        "brainscore-plugin",
        help="write a Brain-Score model plugin folder for a pretrained zoo model",
        description="Write OUT_DIR as a Brain-Score plugin (model.py with get_model / get_layers / "
        "get_bibtex, region_layer_map/<id>.json, test.py) for the pretrained NAME (arch.tag). "
        "Clock step t is [onset + t*step, onset + (t+1)*step) ms after stimulus onset.",
    )
    p.add_argument("name", help="pretrained arch.tag (e.g. cornet_s.imagenet), hf-hub:org/repo "
                   "or local-dir:/path")  # fmt: skip
    p.add_argument("out_dir", help="plugin folder (its name must be a Python identifier)")
    p.add_argument("--region", action="append", default=[], metavar="REGION=LAYER",
                   help="commit a region to a layer, e.g. IT=layer5 (repeatable; default: the "
                   "family's area names, CORnet and BLT-VS)")  # fmt: skip
    p.add_argument("--identifier", help="Brain-Score model identifier (default: NAME, . -> -)")
    p.add_argument("--step-ms", type=float, default=10.0, help="milliseconds per clock step")
    p.add_argument("--onset-ms", type=float, default=0.0, help="latency of step 0 (ms)")
    p.add_argument("--visual-degrees", type=float, default=8.0, help="degrees the input spans")
    p.add_argument("--timesteps", type=int, default=None,
                   help="clock length (default: enough steps for bins up to 250 ms, or the "
                   "model's own clock where it is fixed)")  # fmt: skip
    p.set_defaults(func=_cmd_brainscore_plugin)

    _add_extract_parser(sub)
    # The intro names every subcommand, however many are registered above.
    parser.description = (
        "Recurrent vision models for computational neuroscience, on one clock. Commands: "
        + ", ".join(sub.choices)
        + ". Run 'blt-models COMMAND --help' for the options of one."
    )
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
