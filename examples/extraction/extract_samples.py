"""Per-layer, per-step features of a stimulus folder, written to HDF5 and read back.

    python examples/extraction/extract_samples.py [--out outputs/features.h5] [--pool avg]

Runs offline on the shipped Fashion-MNIST samples with the packaged trained model. The same call
works on any folder of images and any zoo model (``blt-models extract`` is its command line).
A re-run resumes an interrupted file instead of starting again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import blt_models as bm
from blt_models.demo import SAMPLES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/features.h5")
    parser.add_argument("--pool", default=None, help="None, 'avg' or 'random:WIDTH'")
    args = parser.parse_args()

    model = bm.create_model("blt_bl_tiny.fashion_mnist", pretrained=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result = bm.extract_features(
        model, SAMPLES, layers="all", out=args.out, pool=args.pool, batch_size=50, overwrite=True
    )
    print(f"{result.num_images} images, clock steps {result.steps.tolist()}")
    for layer in result.layers:
        print(f"  {layer}: {tuple(result[layer].shape)}  (active from step {result.first_step[layer]})")

    # Later, or in another process: the file is self-describing.
    features = bm.load_features(args.out, layers=["layer3"])
    meta = features.metadata
    print(f"read back {args.out}: model {meta['model']['name']}, pool {meta['pool']}, "
          f"{meta['n_images']} images")  # fmt: skip
    last = features["layer3"][:, -1].flatten(1)  # [N, C*H*W] at the last step
    same = torch.equal(last, result["layer3"][:, -1].flatten(1))
    print(f"layer3 at the last step: {tuple(last.shape)}, identical to the returned result: {same}")


if __name__ == "__main__":
    main()
