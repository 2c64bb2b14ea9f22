"""The docs stand alone: current generated pages, no pointers to documents users lack, runnable
README recipes, plain messages about weights that are not public."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

import blt_models as bm

ROOT = Path(__file__).resolve().parent.parent


def _gen_zoo():
    spec = importlib.util.spec_from_file_location("gen_zoo", ROOT / "docs" / "gen_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_models_md_is_current_with_the_registry():
    gen = _gen_zoo()
    assert gen.stale_message() is None, gen.stale_message()
    text = (ROOT / "docs" / "models.md").read_text()
    assert "| `blt_bl` |" in text and "`blt_bl_tiny.fashion_mnist`" in text
    assert "90.8% on Fashion-MNIST test" in text  # the accuracy column of a measured tag


def test_stale_models_md_is_detected(tmp_path, monkeypatch):
    gen = _gen_zoo()
    page = tmp_path / "models.md"
    page.write_text(gen.PAGE_PATH.read_text().replace("| `blt_bl` |", "| `blt_bl_old` |"))
    monkeypatch.setattr(gen, "PAGE_PATH", page)
    assert "python docs/gen_zoo.py" in gen.stale_message()


# Phrases that point to the project's internal notes, which users do not have.
POINTERS = re.compile(
    r"reference section|\bappendix\b|\bsections? \d+(\.\d+)?\b|reference notes|shared/reference"
    r"|[a-z-]+-reference\.md",
    re.IGNORECASE,
)


def _user_facing_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
    files += sorted((ROOT / "blt_models").rglob("*.py"))
    files += sorted((ROOT / "blt_models" / "weights").glob("*.md"))
    for ext in ("*.py", "*.md", "*.sh"):
        files += sorted((ROOT / "examples").rglob(ext))
    return files


def test_no_pointers_to_documents_users_do_not_have():
    hits = []
    for path in _user_facing_files():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if POINTERS.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "state the facts in place:\n" + "\n".join(hits)


@pytest.mark.parametrize("name", ["blt_bl", "blt_bl.vggface2", "blt_blt.imagenet"])
def test_unpublished_ccn_weights_say_so_and_point_to_the_fixes(name):
    with pytest.raises(bm.WeightsUnavailableError) as err:
        bm.create_model(name, pretrained=True)
    message = str(err.value)
    assert "not public" in message and "examples/train" in message
    assert "load_reference_checkpoint" in message and "checkpoint_path=PATH" in message
    assert "GPL" not in message and "license" not in message.lower()


def _readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_readme_recipe_from_own_images_to_per_step_rdms(tmp_path, monkeypatch):
    pytest.importorskip("h5py")
    pytest.importorskip("rsatoolbox")
    from blt_models.demo import SAMPLES

    folder = tmp_path / "my_images"
    folder.mkdir()
    for png in sorted(SAMPLES.glob("*.png"))[:6]:
        shutil.copy(png, folder / png.name)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_readme_block("Your own images: features and per-step RDMs"), "README", "exec"),
         scope)  # fmt: skip
    feats, rdms = scope["feats"], scope["rdms"]
    assert feats.image_ids == sorted(p.name for p in folder.iterdir())
    assert (tmp_path / "features.h5").is_file() and (tmp_path / "rdms.png").stat().st_size > 5000
    first = bm.create_model("blt_bl_tiny.fashion_mnist").first_steps()
    steps = sorted({int(s) for s, lay in zip(rdms.rdm_descriptors["step"],
                                            rdms.rdm_descriptors["layer"], strict=True)
                    if lay == "layer3"})  # fmt: skip
    assert steps == list(range(first["layer3"], feats.metadata["timesteps"]))
    assert rdms.dissimilarities.shape[1] == 6 * 5 // 2


def test_readme_first_steps_block_runs():
    scope: dict = {}
    exec(compile(_readme_block("First steps in Python"), "README", "exec"), scope)
    assert scope["out"].steps.tolist() == [5, 6, 7, 8, 9]
    assert tuple(scope["out"].features["layer5"].shape) == (10, 4, 512, 7, 7)

