"""IT-like layers of a ConvRNN (Nayebi et al. 2022) over the authors' 26-step neural protocol.

    python examples/convrnn/extract_it_neural.py [--model convrnn_rgc_intermediate]
        [--pretrained] [--img-size 224] [--num-images N] [--out outputs/convrnn_it.h5]

The image is shown for 10 steps (~100 ms at ~10 ms per step) and replaced by the "off" frame
for the remaining 16 (the authors' presentation for their primate recordings). The layers kept
are those the authors found to best match cIT/aIT (``conv9``, ``conv10``; shallow: ``conv5``),
spatially averaged, at every step. ``--pretrained`` downloads the authors' checkpoint once
(``convrnn_<name>.imagenet``, converted into torch.hub's cache); without it the architecture
runs with random weights, offline (the default, e.g. to try the pipeline on a small size).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import blt_models as bm
from blt_models.demo import SAMPLES
from blt_models.models.convrnn import CONVRNN_AREAS, convrnn_spec
from blt_models.stimuli import convrnn_protocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="convrnn_rgc_intermediate")
    parser.add_argument("--pretrained", action="store_true", help="the authors' ImageNet weights")
    parser.add_argument(
        "--img-size", type=int, default=None, help="default: 224 with weights, 96 without"
    )
    parser.add_argument("--num-images", type=int, default=None, help="the first N samples only")
    parser.add_argument("--out", default="outputs/convrnn_it.h5")
    args = parser.parse_args()

    name = f"{args.model}.imagenet" if args.pretrained else args.model
    model = bm.create_model(name, pretrained=args.pretrained).eval()
    size = args.img_size or (224 if args.pretrained else 96)
    # Preprocess (resize, crop, normalise) to this size, as `blt-models extract --img-size` does.
    model.pretrained_cfg = model.pretrained_cfg.replace(input_size=(3, size, size))
    it_layers = list(CONVRNN_AREAS[convrnn_spec(args.model).depth]["cIT/aIT"])
    neural = convrnn_protocol(model, "neural")  # 26 steps, image off at step 10, off frame 0.5
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    images = sorted(Path(SAMPLES).glob("*.png"))[: args.num_images]
    result = bm.extract_features(
        model, [str(p) for p in images], layers=it_layers, stimulus=neural, pool="avg", batch_size=25,
        out=args.out, overwrite=True, progress=False,
    )  # fmt: skip
    print(f"{args.model}: {result.num_images} images, {len(result.steps)} steps "
          f"(image on for steps 0-{neural.off - 1}), {size} px")  # fmt: skip
    for layer in result.layers:
        feats = result[layer]  # [N, S, C]: spatial mean at every step
        print(f"  {layer}: {tuple(feats.shape)}, carries the image from step "
              f"{result.first_step[layer]}")  # fmt: skip
    print(f"protocol recorded in {args.out}: {bm.stimuli.protocol_of(result.metadata)}")


if __name__ == "__main__":
    main()
