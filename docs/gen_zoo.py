"""Model zoo tables generated from the registry, committed in ``docs/models.md``.

``docs/models.md`` holds each table between ``<!-- zoo:NAME -->`` and ``<!-- /zoo:NAME -->``
(NAME: architectures, pretrained, configs), built from ``blt_models.list_models()`` and the
registered pretrained configs, so the page reads the same on the repository site and in the built
docs. ``mkdocs.yml`` lists this file under ``hooks:``: the build fails when the committed tables
are not what the registry gives (``tests/test_docs.py`` checks the same in the test suite).

Parameters and FLOPs are counted on the ``meta`` device (no memory, no arithmetic), with
``torch.utils.flop_counter.FlopCounterMode``, at the default input size of each architecture and
its default number of timesteps. FlopCounterMode counts a multiply-add as two FLOPs (ResNet-50:
8.2 GFLOPs = 4.1 GMACs).

    python docs/gen_zoo.py            # rewrite the tables in docs/models.md
    python docs/gen_zoo.py --check    # exit 1 if docs/models.md is not current
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # document the checkout being built, not some other install
    sys.path.insert(0, str(ROOT))

MARKERS = ("architectures", "pretrained", "configs")
PAGE = "models.md"
PAGE_PATH = ROOT / "docs" / PAGE


def _shift_text(shifts) -> str:
    parts = []
    bottom_up = sorted(-s for s in shifts if s < 0)
    parts.append("B" + ("" if bottom_up == [1] else f" (-{', -'.join(map(str, bottom_up))})"))
    if 0 in shifts:
        parts.append("L")
    top_down = sorted(s for s in shifts if s > 0)
    if top_down:
        parts.append("T" + ("" if top_down == [1] else f" (+{', +'.join(map(str, top_down))})"))
    return " + ".join(parts)


def _describe(name: str, model) -> str:
    from blt_models._registry import get_model_entrypoint, model_family

    family = model_family(name)
    if family == "blt":
        kind = "feed-forward" if model.feedforward else f"recurrent, {model.unroll} unrolling"
        table = ""
        if "top2linear" in name:
            table = ", top2linear layer table"
        elif "b_pm" in name:
            table = ", b_pm layer table"
        return f"BLT {_shift_text(model.shifts)}; {model.num_layers} layers{table}; {kind}"
    if family == "blt_vs":
        return f"BLT-VS, {model.unroll} unrolling (default args)"
    if family == "convrnn":  # the name says cell and depth; details on the ConvRNN page
        return "ConvRNN (Nayebi et al. 2022)"
    doc = (get_model_entrypoint(name).__doc__ or "").strip().splitlines()
    return doc[0].replace("``", "`").rstrip(".") if doc else family


def _count(model, x):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad():
        last = FlopCounterMode(display=False)
        with last:
            model(x)
        every = FlopCounterMode(display=False)
        with every:
            model.forward_timesteps(x)
    return last.get_total_flops(), every.get_total_flops()


@functools.lru_cache(maxsize=1)
def architecture_rows() -> list[dict]:
    """One record per registered architecture, built on the meta device."""
    import torch

    import blt_models as bm

    rows = []
    for name in bm.list_models():
        with torch.device("meta"):
            model = bm.create_model(name).eval()
        cfg = model.pretrained_cfg
        x = torch.empty(1, *cfg.input_size, device="meta")
        flops_last, flops_all = _count(model, x)
        steps = model.readout_steps()
        first = model.first_steps()
        tags = [t for t in bm.list_pretrained(f"{name}.*")]
        rows.append(
            {
                "name": name,
                "description": _describe(name, model),
                "params": sum(p.numel() for p in model.parameters()),
                "gflops_last": flops_last / 1e9,
                "gflops_all": flops_all / 1e9,
                "input_size": tuple(cfg.input_size),
                "timesteps": model.timesteps,
                "readout_steps": steps,
                "num_layers": len(model.layer_names),
                "last_first_step": max(first.values()),
                "pretrained": tags,
            }
        )
    return rows


def _steps_text(steps: list[int]) -> str:
    if len(steps) == 1:
        return str(steps[0])
    if steps == list(range(steps[0], steps[-1] + 1)):
        return f"{steps[0]}..{steps[-1]}"
    return ", ".join(map(str, steps))


def architectures_table() -> str:
    """One compact row per architecture (fits a laptop screen): architectures with weights first."""
    lines = [
        "| architecture | description | params (M) | GFLOPs last / all readouts | input "
        "| T | readout steps | weights |",
        "|---|---|--:|--:|---|--:|---|---|",
    ]
    rows = sorted(architecture_rows(), key=lambda r: not r["pretrained"])  # stable: names sorted
    for r in rows:
        c, h, w = r["input_size"]
        weights = ", ".join(f"`.{t.split('.', 1)[1]}`" for t in r["pretrained"]) or "—"
        lines.append(
            f"| `{r['name']}` | {r['description']} | {r['params'] / 1e6:.2f} "
            f"| {r['gflops_last']:.2f} / {r['gflops_all']:.2f} | {c}×{h}×{w} | {r['timesteps']} "
            f"| {_steps_text(r['readout_steps'])} | {weights} |"
        )
    return "\n".join(lines)


def _where(cfg) -> str:
    if cfg.hf_hub_id:
        where = f"Hub [`{cfg.hf_hub_id}`](https://huggingface.co/{cfg.hf_hub_id})"
        if cfg.hf_hub_filename:
            where += f" `{cfg.hf_hub_filename}`"
        return where
    if cfg.url:
        return f"URL `{cfg.url.rsplit('/', 1)[-1]}` (sha256 pinned)" if cfg.sha256 else f"URL `{cfg.url}`"
    if cfg.file:
        return f"in the package (`weights/{cfg.file}`)"
    return "not published"


def _cfgs():
    import blt_models as bm
    from blt_models._registry import split_model_name_tag

    return [bm.get_pretrained_cfg(*split_model_name_tag(n)) for n in bm.list_pretrained_cfgs()]


def _accuracy(cfg) -> str:
    """Top-1 where the tag records one: measured here, by torchvision, or by the authors."""
    m = cfg.metrics or {}
    if "top1" in m:
        text = f"{m['top1']:.1f}%"
        if m.get("dataset"):
            text += f" on {m['dataset']}"
        if m.get("top1_per_step") and m.get("readout_steps"):
            per = ", ".join(f"{a:.1f}" for a in m["top1_per_step"])
            text += f" at the last step (steps {_steps_text(list(m['readout_steps']))}: {per})"
        return text
    if "imagenet_top1" in m:
        return f"{m['imagenet_top1']:.1f}% ImageNet-1k val (torchvision's figure)"
    if "top1_readme" in m:
        return f"{m['top1_readme']:.1f}% (the authors' figure)"
    return "not measured"


def _short(text: str | None) -> str:
    """The head of a long description: up to its first parenthesis or comma."""
    if not text:
        return "—"
    return re.split(r" \(|, ", text, maxsplit=1)[0]


def _top1(cfg) -> str:
    """The top-1 figure alone (its dataset and per-step values are in the details)."""
    m = cfg.metrics or {}
    for key in ("top1", "imagenet_top1", "top1_readme"):
        if key in m:
            return f"{m[key]:.1f}%"
    return "—"


def pretrained_table() -> str:
    """A compact table of the tags with weights, then each tag's details in a collapsed block."""
    lines = [
        "| name | trained on | classes | timesteps | top-1 | license |",
        "|---|---|--:|---|--:|---|",
    ]
    details = []
    for cfg in _cfgs():
        if not cfg.has_weights:
            continue
        timing = str(cfg.timesteps) if cfg.timesteps else "—"
        if cfg.unroll:
            timing += f" ({cfg.unroll})"
        lines.append(
            f"| `{cfg.name}` | {_short(cfg.training_data)} | {cfg.num_classes} | {timing} "
            f"| {_top1(cfg)} | {_short(cfg.license)} |"
        )
        details += [
            f"    * **`{cfg.name}`**: weights {_where(cfg)}; trained on {cfg.training_data or '—'};",
            f"      top-1 {_accuracy(cfg)}; license {cfg.license or '—'}; source {cfg.source or '—'}.",
        ]
    block = ['', '??? info "Where each tag\'s weights come from: files, training data, accuracy, '
             'license, source"', "", *details]  # fmt: skip
    return "\n".join(lines + block)


def configs_table() -> str:
    """Registered tags without published weights, grouped by tag (one row per tag)."""
    groups: dict[tuple, list[str]] = {}
    for cfg in _cfgs():
        if cfg.has_weights:
            continue
        key = (cfg.tag, cfg.training_data, cfg.num_classes, tuple(cfg.mean), tuple(cfg.std),
               cfg.license, cfg.source)  # fmt: skip
        groups.setdefault(key, []).append((cfg.architecture, cfg.timesteps))
    if not groups:
        return "Every registered tag has published weights."
    lines = [
        "| tag | training data | classes | mean / std | architectures (default timesteps) | license | source |",
        "|---|---|--:|---|---|---|---|",
    ]
    for (tag, data, classes, mean, std, license_, source), archs in sorted(groups.items()):
        stats = f"{', '.join(f'{v:.4g}' for v in mean)} / {', '.join(f'{v:.4g}' for v in std)}"
        lines.append(
            f"| `.{tag}` | {data or '—'} | {classes} | {stats} | {_archs_text(archs)} "
            f"| {license_ or '—'} | {source or '—'} |"
        )
    return "\n".join(lines)


def _archs_text(archs: list[tuple[str, int | None]]) -> str:
    """``27 architectures, T=10; T=15: blt_bl_top2linear`` (the usual T once, exceptions named)."""
    by_t: dict[int | None, list[str]] = {}
    for arch, t in archs:
        by_t.setdefault(t, []).append(arch)
    usual = max(by_t, key=lambda t: len(by_t[t]))
    text = f"{len(archs)} architectures, T={usual}"
    for t, names in sorted(by_t.items(), key=lambda kv: str(kv[0])):
        if t != usual:
            text += f"; T={t}: " + ", ".join(f"`{n}`" for n in names)
    if len(archs) <= 5:
        text += " (" + ", ".join(f"`{a}`" for a, _ in archs) + ")"
    return text


def render(marker: str) -> str:
    return {"architectures": architectures_table, "pretrained": pretrained_table,
            "configs": configs_table}[marker]()  # fmt: skip


# ----------------------------------------------------------------------------- the page
def _block(marker: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- zoo:{marker} -->).*?(<!-- /zoo:{marker} -->)", re.DOTALL)


def current_page(text: str) -> str:
    """``text`` (the page) with every generated table replaced by what the registry gives now."""
    for marker in MARKERS:
        pattern = _block(marker)
        if not pattern.search(text):
            raise ValueError(
                f"{PAGE} lacks the block <!-- zoo:{marker} --> ... <!-- /zoo:{marker} -->"
            )
        table = render(marker)
        text = pattern.sub(lambda m, t=table: f"{m.group(1)}\n{t}\n{m.group(2)}", text)
    return text


def stale_message() -> str | None:
    """None if docs/models.md is current, else what is wrong and the command that fixes it."""
    text = PAGE_PATH.read_text(encoding="utf-8")
    if current_page(text) == text:
        return None
    return "docs/models.md is out of date with the registry: run python docs/gen_zoo.py"


# ------------------------------------------------------------------------------- mkdocs hook
def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    problem = stale_message()
    if problem:
        raise ValueError(problem)
    return markdown


if __name__ == "__main__":
    text = PAGE_PATH.read_text(encoding="utf-8")
    new = current_page(text)
    if "--check" in sys.argv[1:]:
        if new != text:
            print(stale_message(), file=sys.stderr)
            sys.exit(1)
        print("docs/models.md is current")
    else:
        PAGE_PATH.write_text(new, encoding="utf-8")
        print(f"wrote {PAGE_PATH}" + ("" if new != text else " (unchanged)"))
