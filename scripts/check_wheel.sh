#!/usr/bin/env bash
# Packaging check: builds the sdist and the wheel (python -m build; the wheel is built from the
# sdist, so files missing from either are caught), installs the wheel into a fresh venv in a
# temporary folder and uses it from outside the source tree: create_model + forward passes on the
# shipped sample images, the `blt-models` console script, and every pretrained model whose weights
# ship in the package.
#
# The fresh venv reuses the heavy dependencies (torch, torchvision, ...) already installed in .venv
# through a .pth file pointing at .venv's site-packages, and the wheel is installed with --no-deps,
# so nothing is downloaded and torch is never reinstalled. The fresh venv's own site-packages comes
# first on sys.path, so `import blt_models` finds the wheel, not the editable checkout (.pth files
# inside .venv's site-packages, such as the editable install's, are not processed from there).
#   bash scripts/check_wheel.sh
# VENV=/path/to/venv uses an existing environment instead of .venv (needs `build`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [ -z "${VENV:-}" ]; then
  bash scripts/setup.sh
  VENV=.venv
fi
PY=$(cd "$VENV/bin" && pwd)/python

WORK=$(mktemp -d "${TMPDIR:-/tmp}/blt-models-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# 1. Build. When the build requirements of pyproject.toml (setuptools >= 77) are in the venv already,
#    no network is needed (--no-isolation); otherwise `build` fetches them into an isolated env.
mkdir -p dist
rm -f dist/blt_models-*.whl dist/blt_models-*.tar.gz
if "$PY" - <<'PYEOF'
import sys, tomllib
from importlib.metadata import PackageNotFoundError, version
from packaging.requirements import Requirement

with open("pyproject.toml", "rb") as handle:
    requires = tomllib.load(handle)["build-system"]["requires"]
for spec in map(Requirement, requires):
    try:
        if not spec.specifier.contains(version(spec.name), prereleases=True):
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PYEOF
then ISOLATION=--no-isolation; else ISOLATION=; fi
echo "check_wheel: building sdist and wheel ${ISOLATION:+($ISOLATION)}"
"$PY" -m build $ISOLATION --outdir dist . >"$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log"; exit 1; }
WHEEL=$(ls dist/blt_models-*.whl)
SDIST=$(ls dist/blt_models-*.tar.gz)
echo "check_wheel: built $SDIST and $WHEEL"

# 2. Contents: package data (sample images, packaged weights) in both archives.
"$PY" - "$WHEEL" "$SDIST" <<'PYEOF'
import sys, tarfile, zipfile

wheel, sdist = sys.argv[1:]
wheel_names = set(zipfile.ZipFile(wheel).namelist())
with tarfile.open(sdist) as tar:
    sdist_names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}

def check(names, prefix, where):
    samples = [n for n in names if n.startswith(prefix + "blt_models/samples/fashion_mnist/")]
    pngs = [n for n in samples if n.endswith(".png")]
    assert any(n.endswith("/labels.csv") for n in samples), f"{where}: samples/labels.csv missing"
    assert len(pngs) >= 100, f"{where}: {len(pngs)} sample images, expected 100"
    for needed in ("blt_models/__init__.py", "blt_models/py.typed", "blt_models/models/blt.py"):
        assert prefix + needed in names, f"{where}: {needed} missing"
    weights = sorted(n for n in names if n.startswith(prefix + "blt_models/weights/"))
    print(f"check_wheel: {where}: {len(pngs)} sample images + labels.csv, {len(weights)} packaged weight files")
    return {n[len(prefix + "blt_models/weights/"):] for n in weights}

check(wheel_names, "", "wheel")
check(sdist_names, "src/" if any(n.startswith("src/") for n in sdist_names) else "", "sdist")
PYEOF

# 3. A fresh venv that sees .venv's packages (torch etc.) but gets blt-models from the wheel.
"$PY" -m venv --without-pip "$WORK/venv"
FRESH=$WORK/venv/bin/python
FRESH_SITE=$("$FRESH" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$PY" -c 'import site, sysconfig
paths = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
print("\n".join(p for p in paths))' >"$FRESH_SITE/_blt_models_check_deps.pth"
"$PY" -m pip --python "$FRESH" install --quiet --no-deps --no-index "$ROOT/$WHEEL"
echo "check_wheel: installed $(basename "$WHEEL") into a fresh venv (--no-deps; dependencies from $VENV)"
"$PY" -m pip --python "$FRESH" check

# 4. Use it from outside the source tree.
cd "$WORK"
"$WORK/venv/bin/blt-models" list 'cornet*' >"$WORK/list.txt"
grep -qx "cornet_rt" "$WORK/list.txt" || { cat "$WORK/list.txt"; echo "blt-models list: cornet_rt missing" >&2; exit 1; }
"$WORK/venv/bin/blt-models" list >"$WORK/list_all.txt"
echo "check_wheel: 'blt-models list' prints $(wc -l <"$WORK/list_all.txt") architectures"
"$WORK/venv/bin/blt-models" info blt_bl >/dev/null

"$FRESH" - "$WORK" <<'PYEOF'
import sys
from pathlib import Path

import torch

import blt_models as bm
from blt_models.data import create_transform
from blt_models.demo import SAMPLES, load_samples, preprocess

work = Path(sys.argv[1]).resolve()
package = Path(bm.__file__).resolve().parent
assert work in package.parents, f"blt_models imported from {package}, not from the fresh venv"
print(f"check_wheel: blt_models {bm.__version__} from {package} (torch {torch.__version__} from "
      f"{Path(torch.__file__).parent.parent})")

# Shipped sample images, read through the installed package.
samples = load_samples()
assert len(samples.paths) == 100 and all(p.is_file() for p in samples.paths), SAMPLES
assert package in SAMPLES.parents

torch.manual_seed(0)
model = bm.create_model("blt_bl", num_classes=len(samples.class_names)).eval()
x = preprocess(samples.paths[:2], model)
with torch.no_grad():
    logits = model(x)
    out = model.forward_timesteps(x, layers=["layer0", "layer5"])
assert logits.shape == (2, 10) and torch.isfinite(logits).all()
assert out.steps.tolist() == [5, 6, 7, 8, 9] and out.features["layer5"].shape[:2] == (10, 2)
assert torch.allclose(out.logits[-1], logits, atol=1e-5)
print(f"check_wheel: blt_bl forward on 2 sample images: logits {tuple(logits.shape)}, "
      f"readouts at steps {out.steps.tolist()}")

# Every pretrained model whose weights ship inside the package.
shipped = [n for n in bm.list_pretrained() if bm.get_pretrained_cfg(*n.split(".", 1)).file]
for name in shipped:
    cfg = bm.get_pretrained_cfg(*name.split(".", 1))
    path = package / "weights" / cfg.file
    assert path.is_file(), f"{name}: {path} is not in the installed package"
    model = bm.create_model(name, pretrained=True).eval()
    transform = create_transform(model)
    from PIL import Image
    x = torch.stack([transform(Image.open(p)) for p in samples.paths[:8]])
    with torch.no_grad():
        out = model.forward_timesteps(x)
    assert torch.isfinite(out.logits).all()
    line = f"check_wheel: {name} loaded from the package ({cfg.file}); readouts at {out.steps.tolist()}"
    if model.num_classes == len(samples.class_names):
        acc = (out.logits[-1].argmax(-1) == samples.labels[:8]).float().mean().item()
        line += f", last-step accuracy on 8 samples {acc:.0%}"
    print(line)
if not shipped:
    print("check_wheel: no pretrained weights ship in the package yet (list_pretrained() has no file= entries)")
PYEOF
echo "check_wheel: OK"
