"""examples/stimuli/run_experiments.py at a tiny size: it runs, and its numbers obey the clock."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_example():
    path = ROOT / "examples" / "stimuli" / "run_experiments.py"
    spec = importlib.util.spec_from_file_location("stimuli_experiments", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stimuli_experiments_tiny(tmp_path):
    example = load_example()
    res = example.run(n=24, out=tmp_path / "out", assets=tmp_path / "assets", batch=12)
    for name in ("masking", "duration", "flash"):
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 10_000
        assert (tmp_path / "assets" / f"stimuli_{name}.png").exists()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["n"] == 24
    steps, static = res["readout_steps"], res["static"]
    assert steps == [3, 4, 5, 6, 7]
    for kind in ("noise", "image"):
        by_soa = res["masking"][kind]
        assert sorted(by_soa, key=int) == ["1", "2", "3", "4", "5"]
        for soa, acc in by_soa.items():
            # The mask at step soa reaches the readout layer at soa + 3: earlier readouts are the
            # static image's exactly.
            for r, step in enumerate(steps):
                if step < int(soa) + 3:
                    assert acc[r] == static[r], (kind, soa, step)
        assert by_soa["5"] == static
    assert res["duration"]["5"] == static
    flash = res["flash"]
    for layer, first in flash["first_step"].items():
        evoked = flash["evoked"][layer]
        assert all(v == 0 for v in evoked[:first]) and evoked[first] > 0, layer


def test_masking_and_flash_figures_label_what_they_show(tmp_path, monkeypatch):
    """The docs' figures: masking has a title one can read and one legend shared by its panels;
    flash has a colourbar saying what its colours are, and its inactive cells are not coloured."""
    from matplotlib.figure import Figure

    saved = []
    original = Figure.savefig
    monkeypatch.setattr(Figure, "savefig",
                        lambda self, *a, **k: (saved.append(self), original(self, *a, **k))[1])  # fmt: skip
    example = load_example()
    steps = [3, 4]
    by_soa = {1: [50.0, 60.0], 2: [80.0, 85.0]}
    example.plot_masking({"noise": by_soa, "image": by_soa}, {1: [5.0, 9.0], 2: [1.0, 2.0]},
                         [90.0, 91.0], steps, tmp_path / "masking.png", "test images")  # fmt: skip
    masking = saved[-1]
    assert masking._suptitle.get_fontsize() >= 11 and "Backward masking" in masking._suptitle.get_text()
    assert [ax.get_legend() for ax in masking.axes] == [None, None, None] and len(masking.legends) == 1
    labels = [t.get_text() for t in masking.legends[0].get_texts()]
    assert labels == ["readout step 3", "readout step 4", "unmasked image (same readout step)"]
    flash = {"evoked": {"layer0": [1.0, 0.5, 0.4], "layer1": [0.0, 0.7, 0.6]},
             "first_step": {"layer0": 0, "layer1": 1}}
    example.plot_flash(flash, ["layer0", "layer1"], 3, tmp_path / "flash.png")
    fig = saved[-1]
    bars = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert bars == ["|flash - blank| / row max"]
    shown = fig.axes[0].images[0].get_array()
    assert shown.mask[1, 0] and not shown.mask[1, 1:].any()  # layer1 at step 0: inactive
