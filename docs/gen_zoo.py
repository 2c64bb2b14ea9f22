"""Model zoo tables generated from the registry (an mkdocs hook; also runnable on its own).

``mkdocs.yml`` lists this file under ``hooks:``; on the page ``models.md`` the markers
``<!-- zoo:architectures -->``, ``<!-- zoo:pretrained -->`` and ``<!-- zoo:configs -->`` are
replaced by tables built from ``blt_models.list_models()`` and the registered pretrained configs.

Parameters and FLOPs are counted on the ``meta`` device (no memory, no arithmetic), with
``torch.utils.flop_counter.FlopCounterMode``, at the default input size of each architecture and
its default number of timesteps. FlopCounterMode counts a multiply-add as two FLOPs (ResNet-50:
8.2 GFLOPs = 4.1 GMACs).

    python docs/gen_zoo.py          # print the page fragments as Markdown
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # document the checkout being built, not some other install
    sys.path.insert(0, str(ROOT))

MARKERS = ("architectures", "pretrained", "configs")
PAGE = "models.md"


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
    lines = [
        "| architecture | description | params (M) | GFLOPs `model(x)` | GFLOPs all readouts "
        "| input | timesteps | readout steps | weights |",
        "|---|---|--:|--:|--:|---|--:|---|---|",
    ]
    for r in architecture_rows():
        c, h, w = r["input_size"]
        weights = ", ".join(f"`{t}`" for t in r["pretrained"]) or "—"
        lines.append(
            f"| `{r['name']}` | {r['description']} | {r['params'] / 1e6:.2f} "
            f"| {r['gflops_last']:.2f} | {r['gflops_all']:.2f} | {c}×{h}×{w} | {r['timesteps']} "
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


def pretrained_table() -> str:
    lines = [
        "| name | weights | training data | classes | timesteps / unroll | license | source |",
        "|---|---|---|--:|---|---|---|",
    ]
    for cfg in _cfgs():
        if not cfg.has_weights:
            continue
        timing = str(cfg.timesteps) if cfg.timesteps else "—"
        if cfg.unroll:
            timing += f" / {cfg.unroll}"
        lines.append(
            f"| `{cfg.name}` | {_where(cfg)} | {cfg.training_data or '—'} | {cfg.num_classes} "
            f"| {timing} | {cfg.license or '—'} | {cfg.source or '—'} |"
        )
    return "\n".join(lines)


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


# ------------------------------------------------------------------------------- mkdocs hook
def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    for marker in MARKERS:
        tag = f"<!-- zoo:{marker} -->"
        if tag not in markdown:
            raise ValueError(f"{PAGE} lacks the marker {tag}")
        markdown = markdown.replace(tag, render(marker))
    return markdown


if __name__ == "__main__":
    for marker in MARKERS:
        print(f"## {marker}\n\n{render(marker)}\n")
