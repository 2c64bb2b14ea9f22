"""The README's main job, on a small model."""

import re
from pathlib import Path

import blt_models as bm
from blt_models.demo import load_samples, run_demo


def test_samples_are_shipped():
    samples = load_samples()
    assert len(samples.paths) == 100 and all(p.is_file() for p in samples.paths)
    assert samples.class_names[9] == "Ankle boot"
    assert samples.labels.bincount().tolist() == [10] * 10


def test_main_job_uses_the_packaged_model_offline(tmp_path, capsys):
    result = run_demo(out_dir=tmp_path)  # the README's main job
    out = capsys.readouterr().out
    assert "blt_bl_tiny.fashion_mnist" in out and "readouts at steps [3, 4, 5, 6, 7]" in out
    assert result["steps"] == [3, 4, 5, 6, 7]
    assert result["accuracy"][-1] >= 0.85 and result["accuracy"][-1] > result["accuracy"][0]
    assert "images whose answer changes over time" in out
    assert result["figure"].stat().st_size > 10_000
    # Every changed image is listed, or the rest is counted: listed + "... and N more" = total.
    total = int(re.search(r"images whose answer changes over time: (\d+)", out).group(1))
    listed = len(re.findall(r"^  test\d+\.png \(", out, re.MULTILINE))
    more = re.search(r"\.\.\. and (\d+) more", out)
    assert listed + (int(more.group(1)) if more else 0) == total
    # The README quotes these numbers.
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    readme = " ".join(readme.split())
    acc = [round(100 * a) for a in result["accuracy"]]
    quoted = f"82% at step 3, {acc[1]}, {acc[2]}, {acc[3]} and {acc[4]}% at the last step, 7"
    assert acc[0] == 82 and quoted in readme
    assert f"the {total} images whose answer changes over time" in readme


def test_demo_on_an_untrained_architecture(tmp_path, capsys):
    result = run_demo("blt_b", tmp_path)
    assert "readouts at steps [0]" in capsys.readouterr().out
    assert result["accuracy"] == []
    assert set(result["activity"]) == set(bm.create_model("blt_b").layer_names)


def test_cli_list_and_info(capsys):
    from blt_models.cli import main

    assert main(["list", "blt_b3l*"]) == 0
    assert capsys.readouterr().out.split() == ["blt_b3l", "blt_b3lt", "blt_b3lt2", "blt_b3lt3"]
    assert main(["info", "blt_bl"]) == 0
    out = capsys.readouterr().out
    assert "10,002,600" in out and "5, 6, 7, 8, 9" in out and "layer5 (from step 5)" in out
    assert main(["info", "blt_blx"]) == 1
    assert "Did you mean" in capsys.readouterr().err


def test_demo_figure_labels_and_honest_accuracy_axis(tmp_path, monkeypatch, capsys):
    """The figure on the docs' front page: the accuracy axis spans 0-100% with chance marked (a
    zoom on 82-91% made eight points look like a leap), and its title says what was run."""
    from matplotlib.figure import Figure

    saved = []
    original = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (saved.append(self), original(self, *a, **k))[1])
    run_demo(out_dir=tmp_path)
    fig = saved[-1]
    activity, accuracy, evidence = fig.axes
    assert fig._suptitle.get_text() == "blt_bl_tiny.fashion_mnist: 100 Fashion-MNIST test images"
    assert accuracy.get_ylim() == (0, 100) and accuracy.get_ylabel() == "top-1 accuracy (%)"
    assert "chance (10%)" in [t.get_text() for t in accuracy.get_legend().get_texts()]
    assert evidence.get_ylim() == (0, 1) and activity.get_xlabel() == "clock step t"
