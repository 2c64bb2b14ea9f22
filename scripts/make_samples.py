"""Writes the sample stimuli shipped in blt_models/samples/fashion_mnist/ (run once; kept for provenance).

Source: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist), test split. The first ten
test images of each class, as 28x28 grayscale PNGs, plus labels.csv (file, label, class name).
"""

import csv
import gzip
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path("/usr/share/datasets/fashion-mnist")
OUT = Path(__file__).resolve().parents[1] / "blt_models" / "samples" / "fashion_mnist"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

with gzip.open(ROOT / "t10k-images-idx3-ubyte.gz") as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
with gzip.open(ROOT / "t10k-labels-idx1-ubyte.gz") as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)

OUT.mkdir(parents=True, exist_ok=True)
rows = []
for label in range(10):
    for index in np.flatnonzero(labels == label)[:10]:
        name = f"test{index:05d}.png"
        Image.fromarray(images[index], mode="L").save(OUT / name, optimize=True)
        rows.append((name, label, CLASSES[label]))
with open(OUT / "labels.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["file", "label", "class_name"])
    writer.writerows(sorted(rows))
print(f"wrote {len(rows)} images to {OUT}")
