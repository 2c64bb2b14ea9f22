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
    for i, png in enumerate(sorted(SAMPLES.glob("*.png"))[:6]):
        (folder / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, folder / "ab"[i % 2] / png.name)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_readme_block("Your own images: features and per-step RDMs"), "README", "exec"),
         scope)  # fmt: skip
    feats, rdms = scope["feats"], scope["rdms"]
    assert feats.image_ids == sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert feats.labels == ["a"] * 3 + ["b"] * 3
    assert set(scope["decoding"].accuracy) == {"layer1", "layer3"}
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



# ------------------------------------------------------------------ reference pages (issue 25)
API_PAGES = sorted((ROOT / "docs").glob("api*.md"))
PUBLIC_MODULES = (
    "blt_models", "blt_models.analysis", "blt_models.stimuli", "blt_models.extract",
    "blt_models.errors", "blt_models.integrations.brainscore",
    "blt_models.integrations.brainscore_plugin", "blt_models.integrations.thingsvision",
)  # fmt: skip


def _static_all(module: str) -> list[str]:
    """``__all__`` of a module read from its source (``=`` and ``+=``), so that the integration
    modules, whose imports need their own environments, are covered too."""
    import ast

    path = ROOT / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    names: list[str] = []
    for node in ast.parse(path.read_text()).body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(node, (ast.Assign, ast.AugAssign)) and getattr(target, "id", "") == "__all__":
            names += ast.literal_eval(node.value)
    assert names, f"{module} has no __all__"
    return names


def _documented_paths() -> set[str]:
    paths = set()
    for page in API_PAGES:
        paths |= set(re.findall(r"^::: ([\w.]+)", page.read_text(), re.MULTILINE))
    return paths


def _resolve(path: str):
    import importlib

    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def test_every_public_name_is_on_an_api_page():
    """Each name of each public ``__all__`` is rendered (``::: path``) under its own path or, for
    a re-export, under the path of the same object (``blt_models.InputError`` is documented as
    ``blt_models.errors.InputError``)."""
    documented = _documented_paths()
    by_identity: dict[int, str] = {}
    for path in documented:
        try:
            by_identity[id(_resolve(path))] = path
        except (ImportError, AttributeError):
            pass  # an integration module without its environment: matched by path below
    missing = []
    for module in PUBLIC_MODULES:
        for name in _static_all(module):
            path = f"{module}.{name}"
            if path in documented:
                continue
            try:
                obj = _resolve(path)
            except ImportError:
                missing.append(path)
                continue
            if id(obj) not in by_identity:
                missing.append(path)
    assert not missing, "add a '::: path' entry to docs/api*.md for:\n" + "\n".join(missing)


def test_api_pages_have_no_duplicated_option_keys():
    """A YAML mapping with a key twice keeps only the last value: a second ``members:`` silently
    dropped ``arrival_steps`` and ``connections`` from ``ClockedModel``'s page once."""
    for page in API_PAGES:
        for block in re.split(r"^::: ", page.read_text(), flags=re.MULTILINE)[1:]:
            keys = re.findall(r"^ {6}(\w+):", block, re.MULTILINE)
            assert len(keys) == len(set(keys)), f"{page.name}: ::: {block.splitlines()[0]}: {keys}"


def test_api_pages_render_every_member_of_clocked_model():
    """ClockedModel is rendered without a hand-kept member list, so no method can be left out."""
    text = (ROOT / "docs" / "api.md").read_text()
    block = text.split("::: blt_models.ClockedModel\n", 1)[1].split(":::", 1)[0]
    assert "members:" not in block


SPHINX_ROLE = re.compile(r":(class|func|meth|attr|mod|data|exc|obj|py:\w+):`")


def test_docstrings_use_autorefs_not_sphinx_roles():
    """mkdocstrings (Google style) shows ``:class:`X``` as raw text; cross-references are
    ``[`X`][blt_models.X]`` autorefs."""
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
            for p in sorted((ROOT / "blt_models").rglob("*.py"))
            for n, line in enumerate(p.read_text().splitlines(), 1) if SPHINX_ROLE.search(line)]  # fmt: skip
    assert not hits, "\n".join(hits)


def _table_first_column(page: str, heading: str) -> set[str]:
    """The backticked names in the first column of the first table under ``heading``."""
    text = (ROOT / "docs" / page).read_text()
    section = text.split(heading, 1)[1]
    table = re.search(r"^\|.*?(?=^\s*$)", section, re.MULTILINE | re.DOTALL).group(0)
    names = set()
    for row in table.splitlines()[2:]:
        first = row.split("|")[1]
        names |= {n.split()[0] for n in re.findall(r"`([^`]+)`", first)}
    return names


@pytest.mark.parametrize(
    ("function", "page", "heading"),
    [("extract_features", "extraction.md", "## Arguments"),
     ("create_model", "quickstart.md", "### `create_model` arguments")],
)  # fmt: skip
def test_argument_tables_list_every_parameter(function, page, heading):
    import inspect

    params = inspect.signature(getattr(bm, function)).parameters.values()
    wanted = {("**" if p.kind is p.VAR_KEYWORD else "") + p.name for p in params}
    missing = wanted - _table_first_column(page, heading)
    assert not missing, f"docs/{page} ({heading}) lacks rows for {sorted(missing)}"


def test_cli_page_lists_every_argument_of_every_subcommand():
    import argparse

    from blt_models.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, parser in sub.choices.items():
        documented = _table_first_column("cli.md", f"## `blt-models {name}`")
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            names = action.option_strings or [action.metavar or action.dest]
            missing += [f"{name} {n}" for n in names if n not in documented]
    assert not missing, "docs/cli.md lacks rows for:\n" + "\n".join(missing)


# ------------------------------------------------------------------ install lines (issue 25)
INSTALL = re.compile(r"(?:[\w./-]*pip|python -m pip) install [^`\n#]*")
AFTER_PYPI = re.compile(r"after a PyPI release|once .{0,40}on PyPI|when .{0,40}on PyPI", re.I)


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _install_lines() -> list[tuple[str, int, str, str]]:
    """``(file, line number, command, context)`` of every ``pip install`` a user can read."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files += sorted((ROOT / "blt_models").rglob("*.py"))
    files += sorted((ROOT / "examples").rglob("*.md"))
    found = []
    for path in files:
        lines = path.read_text().splitlines()
        for n, line in enumerate(lines):
            for match in INSTALL.finditer(line):
                words = re.sub(r"^\S*pip install|^python -m pip install", "pip install",
                               match.group(0).strip()).split()  # fmt: skip
                end = next((i for i, w in enumerate(words) if i > 1 and (
                    w in ("in", "then", "or", "from") or w.startswith("("))), len(words))  # fmt: skip
                command = " ".join(w for w in words[:end] if w != "\"").rstrip(").,;")
                context = "\n".join(lines[max(0, n - 3) : n + 4])
                found.append((str(path.relative_to(ROOT)), n + 1, command, context))
    return found


def _known_good(command: str, context: str) -> bool:
    """One of the install lines that CI runs as written, or one marked as for after a release."""
    project = _pyproject()
    extras = set(project["project"]["optional-dependencies"])
    version = project["project"]["version"]
    setup_integrations = (ROOT / "scripts" / "setup_integrations.sh").read_text()
    pins = re.search(r"TORCH_PINS=\((.*)\)", setup_integrations).group(1)
    third_party = {re.split(r"[<>=\[ ;]", r)[0] for reqs in
                   project["project"]["optional-dependencies"].values() for r in reqs}  # fmt: skip
    args = command.split()[2:]
    # scripts/setup.sh and the test environment: an editable install of the clone with extras.
    m = re.fullmatch(r"-e ([\"']?)\.\[([\w,{}]+)\]\1", " ".join(args))
    if m:
        if m.group(2) == "{extra}":  # blt_models._optional's hint, for each extra it names
            from blt_models._optional import EXTRAS

            return {extra for _, extra in EXTRAS.values()} <= extras
        return set(m.group(2).split(",")) <= extras
    # scripts/check_wheel.sh builds exactly this wheel and installs it in a fresh environment.
    m = re.fullmatch(rf'"?dist/blt_models-{re.escape(version)}-py3-none-any\.whl(\[[\w,]+\])?"?',
                     " ".join(args))  # fmt: skip
    if m:
        return not m.group(1) or set(m.group(1)[1:-1].split(",")) <= extras
    # scripts/setup_integrations.sh: the torch pins, then the extra of the environment.
    m = re.fullmatch(r'(.*) -e "\.\[(brainscore|thingsvision)\]"', " ".join(args))
    if m:
        return m.group(1) == pins and f'build {m.group(2)} ' in setup_integrations
    if args[:1] == ["--no-deps"]:
        return args[1] in setup_integrations
    if any("blt-models" in a or "blt_models" in a for a in args):  # the PyPI name
        return bool(AFTER_PYPI.search(context))
    return len(args) == 1 and args[0].strip("'\"") in third_party | {"wandb"}


def test_every_install_line_is_one_that_ci_runs():
    lines = _install_lines()
    assert len(lines) >= 8, lines  # the scan finds the docs' install lines
    bad = [f"{f}:{n}: {c}" for f, n, c, ctx in lines if not _known_good(c, ctx)]
    assert not bad, ("install lines that no CI script runs as written (blt-models is not on "
                     "PyPI; mark a line for after a release as such):\n" + "\n".join(bad))  # fmt: skip


@pytest.mark.parametrize(
    "command",
    ['pip install "blt-models[extract]"', "pip install -U blt-models", 'pip install -e ".[nope]"',
     'pip install "dist/blt_models-0.0.1-py3-none-any.whl"',
     'pip install "torch==2.0" "torchvision==0.15" -e ".[brainscore]"'],
)  # fmt: skip
def test_install_line_check_refuses_lines_that_cannot_work(command):
    assert not _known_good(command, "")


def test_no_page_claims_the_package_is_on_pypi():
    claims = re.compile(r"pip-installable|pip installable|available on PyPI|from PyPI", re.I)
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
            for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
            for n, line in enumerate(p.read_text().splitlines(), 1) if claims.search(line)]  # fmt: skip
    assert not hits, "\n".join(hits)


# ------------------------------------------------------------------ site layout (issue 25)
def test_zoo_page_leads_with_weights_in_a_compact_table():
    text = (ROOT / "docs" / "models.md").read_text()
    assert text.index("## Pretrained weights") < text.index("## Architectures")
    pretrained = text.split("<!-- zoo:pretrained -->", 1)[1].split("\n\n", 1)[0]
    header = pretrained.strip().splitlines()[0]
    assert header.count("|") - 1 <= 6, header  # fits a laptop screen; details one click away
    assert '??? info "Where each tag' in text and "(sha256 pinned)" in text
    arch = text.split("<!-- zoo:architectures -->", 1)[1].split("<!--", 1)[0].strip().splitlines()[2:]
    with_weights = [not row.rstrip().endswith("| — |") for row in arch]
    assert with_weights == sorted(with_weights, reverse=True)  # architectures with weights first


def _load_layout_checker():
    spec = importlib.util.spec_from_file_location("check_docs_layout",
                                                  ROOT / "scripts" / "check_docs_layout.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_layout_check_finds_raw_roles(tmp_path):
    checker = _load_layout_checker()
    (tmp_path / "a.html").write_text("<p>see :class:<code>Foo</code></p>")
    (tmp_path / "b.html").write_text("<p>see <a href='#x'><code>Foo</code></a>: fine</p>")
    assert checker.raw_roles(tmp_path) == ["a.html: ...:class:<code>..."]



def test_layout_check_takes_pages_after_options_as_its_usage_line_shows(tmp_path):
    # ``check_docs_layout.py site/ [--width 1400] [--screenshots DIR] [PAGE ...]``: pages after
    # the options were refused by argparse ("unrecognized arguments").
    checker = _load_layout_checker()
    assert checker.main([str(tmp_path), "--width", "1400", "index.html", "--chromium", ""]) == 2

@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_layout_check_finds_overflowing_tables_and_code_in_chromium(tmp_path, capsys):
    checker = _load_layout_checker()
    wide = "x" * 400
    page = tmp_path / "wide" / "index.html"
    page.parent.mkdir()
    page.write_text(f"<html><body><article style='width: 600px'>"
                    f"<div class='md-typeset__scrollwrap' style='overflow:auto'><table><tr><td>"
                    f"{wide}</td></tr></table></div><pre><code style='display:block;overflow:auto'>"
                    f"{wide}</code></pre><table><tr><td>short</td></tr></table></article></body></html>")  # fmt: skip
    (tmp_path / "fine" / "index.html").parent.mkdir()
    (tmp_path / "fine" / "index.html").write_text("<html><body><article><pre><code>ok</code></pre>"
                                                  "</article></body></html>")  # fmt: skip
    assert checker.main([str(tmp_path), "--width", "1400"]) == 1
    out = capsys.readouterr().out
    assert "2 pages at 1400 px: 2 overflow(s)" in out
    assert "wide: table" in out and "wide: code" in out and "fine:" not in out


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_layout_check_finds_names_broken_mid_word_in_a_squeezed_first_column(tmp_path, capsys):
    # Material's `word-break: break-word` on code let a table squeeze its first column and break
    # `store_dtype` mid-word while the next column had room (docs/stylesheets/extra.css).
    checker = _load_layout_checker()
    row = ("<tr><td><code style='word-break: {}'>store_dtype</code></td>"
           "<td>dtype of the stored features, {}</td></tr>")  # fmt: skip
    for name, rule in (("squeezed", "break-word"), ("whole", "normal")):
        page = tmp_path / name / "index.html"
        page.parent.mkdir()
        page.write_text(f"<html><body><article style='width: 400px; font-family: monospace'>"
                        f"<table>{row.format(rule, 'x ' * 200)}</table></article></body></html>")  # fmt: skip
    assert checker.main([str(tmp_path), "--width", "1400"]) == 1
    out = capsys.readouterr().out
    assert "squeezed: name broken" in out and "store_dtype" in out and "whole:" not in out
