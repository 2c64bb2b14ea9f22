"""Connectivity diagrams of registry models, as PNG (matplotlib) and as TikZ source.

[`model_graph`][blt_models.analysis.model_graph] reads only what the model declares: ``model.connections()``, the family
protocol of [`ClockedModel`][blt_models.ClockedModel], which lists every connection with its kind
(input, bottom-up, skip, lateral, top-down, readout), its delay in clock steps and the submodule
that carries it. Objects outside the zoo may return ``(src, dst, kind[, label])`` tuples or
mappings with keys ``src``, ``dst``, ``kind`` and optionally ``label``, ``module``, ``delay``.

Edge kinds: ``bottom_up`` (blue), ``skip`` (purple), ``lateral`` (green), ``top_down`` (red);
``input`` and ``readout`` edges are grey. Labels give kernel sizes and strides (``conv 3x3/s1``,
``maxpool 3/s2``...).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DiagramEdge",
    "DiagramNode",
    "ModelGraph",
    "diagram_tikz",
    "draw_diagram",
    "model_graph",
    "save_diagram",
]

KINDS = ("bottom_up", "skip", "lateral", "top_down", "input", "readout")
COLOURS = {
    "bottom_up": "#1f77b4",
    "skip": "#9467bd",
    "lateral": "#2ca02c",
    "top_down": "#d62728",
    "input": "#555555",
    "readout": "#555555",
}
TIKZ_STYLES = {
    "bottom_up": "bu",
    "skip": "skip",
    "lateral": "lat",
    "top_down": "td",
    "input": "io",
    "readout": "io",
}
KIND_NAMES = {
    "bottom_up": "bottom-up",
    "skip": "skip",
    "lateral": "lateral",
    "top_down": "top-down",
}


@dataclass
class DiagramNode:
    name: str
    detail: str = ""  # e.g. "64 ch, 56x56"


@dataclass
class DiagramEdge:
    src: str
    dst: str
    kind: str
    label: str = ""
    delay: int | None = None  # clock steps between the source's output and its use


@dataclass
class ModelGraph:
    """Layers bottom (input) to top (readout) and the typed connections between them."""

    name: str
    nodes: list[DiagramNode]
    edges: list[DiagramEdge]
    meta: dict[str, Any] = field(default_factory=dict)

    def level(self, name: str) -> int:
        return [n.name for n in self.nodes].index(name)

    def edges_of(self, kind: str) -> list[DiagramEdge]:
        return [e for e in self.edges if e.kind == kind]

    def __repr__(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in Counter(e.kind for e in self.edges).items())
        layers = [n.name for n in self.nodes]
        shown = ", ".join(layers[:8]) + (", ..." if len(layers) > 8 else "")
        return (f"ModelGraph({self.name}: {len(layers)} layers ({shown}); "
                f"{len(self.edges)} connections ({kinds}))")  # fmt: skip


# ------------------------------------------------------------------------------ module summaries
def _pair(v: Any) -> int:
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


def describe_module(module: Any) -> str:
    """Kernel/stride summary of an edge module: ``"maxpool 3/s2 + conv 3x3/s1"``."""
    from torch import nn

    parts: list[str] = []
    leaves = [m for m in module.modules() if not list(m.children())] if module is not None else []
    for m in leaves:
        if isinstance(m, nn.ConvTranspose2d):
            k = _pair(m.kernel_size)
            parts.append(f"convT {k}x{k}/s{_pair(m.stride)}")
        elif isinstance(m, nn.Conv2d):
            k = _pair(m.kernel_size)
            parts.append(f"conv {k}x{k}/s{_pair(m.stride)}")
        elif isinstance(m, nn.MaxPool2d):
            parts.append(f"maxpool {_pair(m.kernel_size)}/s{_pair(m.stride)}")
        elif isinstance(m, nn.AvgPool2d):
            parts.append(f"avgpool {_pair(m.kernel_size)}/s{_pair(m.stride)}")
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            parts.append("global pool")
        elif isinstance(m, nn.Linear):
            parts.append(f"linear {m.in_features}->{m.out_features}")
        elif type(m).__name__ == "BlurPool":
            parts.append(f"blurpool /s{getattr(m, 'stride', 2)}")
    return " + ".join(parts)


def _first_conv(module: Any) -> str:
    from torch import nn

    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            return describe_module(m)
    return ""


def _submodule(model: Any, name: str) -> Any:
    try:
        return model.get_submodule(name)
    except (AttributeError, TypeError):
        return None


def _display_name(model: Any) -> str:
    cfg = getattr(model, "pretrained_cfg", None)
    name = getattr(cfg, "architecture", "") if cfg is not None else ""
    return name or type(model).__name__


def _layer_names(model: Any) -> list[str]:
    names = getattr(model, "layer_names", None)
    if names:
        return list(names)
    return [n for n, _ in model.named_children()]


def _node_details(model: Any, names: list[str]) -> dict[str, str]:
    channels = getattr(model, "channels", None)
    sizes = getattr(model, "sizes", None)
    out = {}
    for i, name in enumerate(names):
        bits = []
        if channels is not None and i < len(channels):
            bits.append(f"{channels[i]} ch")
        if sizes is not None and i < len(sizes):
            bits.append(f"{sizes[i]}x{sizes[i]}")
        out[name] = ", ".join(bits)
    return out


def _as_edge(model: Any, item: Any, names: list[str]) -> DiagramEdge:
    """A declared connection (a ``Connection``, tuple or mapping) as a labelled edge."""
    if isinstance(item, Mapping):
        src, dst, kind = item["src"], item["dst"], item["kind"]
        label, module, delay = item.get("label") or "", item.get("module"), item.get("delay")
    elif hasattr(item, "src") and hasattr(item, "dst"):
        src, dst, kind, label = item.src, item.dst, item.kind, ""
        module, delay = getattr(item, "module", None), getattr(item, "delay", None)
    else:
        src, dst, kind = item[0], item[1], item[2]
        label, module, delay = (item[3] if len(item) > 3 else ""), None, None
    src, dst = (names[x] if isinstance(x, int) else str(x) for x in (src, dst))
    kind = str(kind).replace("-", "_")
    if not label and module:
        sub = _submodule(model, module) if isinstance(module, str) else module
        label = describe_module(sub) if sub is not None else ""
    if not label and kind in ("input", "bottom_up") and _submodule(model, dst) is not None:
        label = _first_conv(_submodule(model, dst))  # e.g. a CORnet-Z area: its first conv
    return DiagramEdge(src, dst, kind, label, delay)


def model_graph(model: Any) -> ModelGraph:
    """The declared connectivity of ``model`` (``model.connections()``) as a [`ModelGraph`][blt_models.analysis.ModelGraph].

    Nodes: ``input``, ``model.layer_names`` in order, ``readout``. Raises TypeError for an object
    that declares no connections.
    """
    declared = getattr(model, "connections", None)
    if not callable(declared):
        raise TypeError(
            f"{type(model).__name__} declares no connections(): zoo models inherit it from "
            "blt_models.ClockedModel; other objects need a connections() method returning "
            "(src, dst, kind) tuples"
        )
    names = _layer_names(model)
    details = _node_details(model, names)
    in_chans = getattr(model, "in_chans", None)
    size = getattr(model, "nominal_size", None)
    input_detail = ", ".join(
        b for b in (f"{in_chans} ch" if in_chans else "", f"{size}x{size}" if size else "") if b
    )
    nodes = [DiagramNode("input", input_detail)] + [
        DiagramNode(n, details.get(n, "")) for n in names
    ]
    edges = [_as_edge(model, item, names) for item in declared()]
    known = {n.name for n in nodes} | {"readout"}
    for e in edges:
        for n in (e.src, e.dst):
            if n not in known:
                nodes.append(DiagramNode(n))
                known.add(n)
    if not any(e.src == "input" for e in edges):
        edges.insert(0, DiagramEdge("input", names[0], "input", ""))
    if not any(e.dst == "readout" for e in edges):
        edges.append(DiagramEdge(names[-1], "readout", "readout", ""))
    num_classes = getattr(model, "num_classes", None)
    nodes.append(DiagramNode("readout", f"{num_classes} classes" if num_classes else ""))
    return ModelGraph(_display_name(model), nodes, edges, {"source": "connections"})


def _graph(model_or_graph: Any) -> ModelGraph:
    return model_or_graph if isinstance(model_or_graph, ModelGraph) else model_graph(model_or_graph)


# ------------------------------------------------------------------------------------------- PNG
def draw_diagram(
    model_or_graph: Any, path: str | Path, title: str | None = None, labels: bool = True
) -> Path:
    """Draw the connectivity diagram as a PNG (layers stacked bottom-up, input at the bottom)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    g = _graph(model_or_graph)
    n = len(g.nodes)
    dy, w, h = 1.6, 2.4, 0.8
    ys = {node.name: i * dy for i, node in enumerate(g.nodes)}
    lateral = {e.dst: e for e in g.edges if e.src == e.dst}
    max_span = max([abs(g.level(e.dst) - g.level(e.src)) for e in g.edges] + [1])
    outer = w / 2 + (0.25 + 0.08 * max_span) * max_span * dy / 2 + 0.3
    half = 5.2 if max_span <= 1 else outer + 2.9
    fig = Figure(figsize=(9.0 * half / 5.2, 1.05 * n + 1.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 0.94))
    ax.set_xlim(-half, half)
    ax.set_ylim(-0.8, (n - 1) * dy + 0.8)
    ax.axis("off")
    for node in g.nodes:
        y = ys[node.name]
        grey = node.name in ("input", "readout")
        ax.add_patch(
            FancyBboxPatch(
                (-w / 2, y - h / 2),
                w,
                h,
                boxstyle="round,pad=0.04,rounding_size=0.12",
                fc="#eeeeee" if grey else "#fff7e0",
                ec="0.3",
                lw=1.0,
            )
        )
        text = node.name if not node.detail else f"{node.name}\n{node.detail}"
        loop = lateral.get(node.name)
        if loop is not None and labels and loop.label:
            ax.text(0, y + 0.1, text, ha="center", va="center", fontsize=8.5)
            ax.text(
                0,
                y - 0.27,
                f"lateral: {loop.label}",
                ha="center",
                va="center",
                fontsize=6.5,
                color=COLOURS["lateral"],
            )
        else:
            ax.text(0, y, text, ha="center", va="center", fontsize=8.5)

    def arrow(p, q, colour, rad=0.0, lw=1.4):
        ax.add_patch(
            FancyArrowPatch(
                p,
                q,
                arrowstyle="-|>",
                mutation_scale=11,
                color=colour,
                lw=lw,
                connectionstyle=f"arc3,rad={rad}",
                shrinkA=1,
                shrinkB=1,
            )
        )

    for e in g.edges:
        colour = COLOURS.get(e.kind, "0.3")
        ya, yb = ys.get(e.src), ys.get(e.dst)
        if ya is None or yb is None:
            continue
        span = abs(g.level(e.dst) - g.level(e.src))
        label_xy = None
        ha = "left"
        if e.kind == "lateral" or e.src == e.dst:
            arrow((w / 2 + 0.04, ya + 0.15), (w / 2 + 0.04, ya - 0.15), colour, rad=-2.2)
        elif yb > ya and span == 1:  # adjacent upward (bottom-up, input, readout)
            x = -0.45 if e.kind == "bottom_up" else 0.0
            arrow((x, ya + h / 2), (x, yb - h / 2), colour)
            if e.kind == "bottom_up":
                label_xy, ha = (x - 0.1, (ya + yb) / 2), "right"
            else:
                label_xy, ha = (x + 0.1, (ya + yb) / 2), "left"
        else:  # skip bottom-up on the left, top-down on the right
            up = yb > ya
            side = -1.0 if up else 1.0
            x = side * w / 2
            shift = 0.06 * (span - 1)
            p, q = (x, ya + (shift if up else -shift)), (x, yb - (shift if up else -shift))
            if span == 1:  # adjacent top-down: straight, right of centre
                p, q = (0.45, ya - h / 2), (0.45, yb + h / 2)
                arrow(p, q, colour)
                label_xy, ha = (0.55, (ya + yb) / 2), "left"
            else:
                rad = -(0.25 + 0.08 * span)
                arrow(p, q, colour, rad=rad)
                # Skip labels sit in an outer column, beyond every arc, level with their arc's apex.
                label_xy = (side * outer, (ya + yb) / 2 + 0.2 * (span % 2))
                ha = "right" if up else "left"
        if labels and e.label and label_xy is not None:
            ax.text(
                *label_xy,
                e.label,
                ha=ha,
                va="center",
                fontsize=6.5,
                color=colour,
                bbox=dict(fc="white", ec="none", alpha=0.85, pad=0.6),
            )
    handles = [
        Line2D([0], [0], color=COLOURS[k], lw=2, label=KIND_NAMES[k])
        for k in ("bottom_up", "skip", "lateral", "top_down")
        if g.edges_of(k)
    ]
    if handles:
        ax.legend(handles=handles, loc="upper left", fontsize=8, frameon=False)
    fig.suptitle(title or f"{g.name}: connectivity", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, format="png")
    return path


# ------------------------------------------------------------------------------------------ TikZ
def _tex(text: str) -> str:
    """Escape a label for TeX; ``3x3`` becomes ``3$\\times$3`` and ``->`` an arrow."""
    out = text.replace("\\", r"\textbackslash{}")
    for a, b in (("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("->", r"$\to$")):
        out = out.replace(a, b)
    return re.sub(r"(?<=\d)x(?=\d)", r"$\\times$", out)


def diagram_tikz(model_or_graph: Any, standalone: bool = True) -> str:
    """TikZ source of the connectivity diagram (a compilable ``standalone`` document by default)."""
    g = _graph(model_or_graph)
    ids = {node.name: f"n{i}" for i, node in enumerate(g.nodes)}
    lines = []
    if standalone:
        lines += [r"\documentclass[tikz,border=6pt]{standalone}", r"\usetikzlibrary{arrows.meta}"]
        lines += [r"\begin{document}"]
    lines += [
        r"% " + f"Connectivity of {g.name} (generated by blt_models.analysis.diagram_tikz)",
        r"\definecolor{bottomup}{HTML}{1F77B4}",
        r"\definecolor{lateral}{HTML}{2CA02C}",
        r"\definecolor{topdown}{HTML}{D62728}",
        r"\definecolor{iogrey}{HTML}{555555}",
        r"\definecolor{skipc}{HTML}{9467BD}",
        r"\begin{tikzpicture}[",
        r"  layer/.style={draw, rounded corners=3pt, fill=orange!8, minimum width=3.4cm,"
        r" minimum height=0.95cm, align=center, font=\small},",
        r"  iobox/.style={layer, fill=gray!12},",
        r"  edge/.style={-{Stealth[length=2.2mm]}, semithick},",
        r"  lbl/.style={font=\scriptsize, align=center},",
        r"  bu/.style={edge, bottomup}, lat/.style={edge, lateral},",
        r"  td/.style={edge, topdown}, io/.style={edge, iogrey}, skip/.style={edge, skipc}]",
    ]
    for i, node in enumerate(g.nodes):
        style = "iobox" if node.name in ("input", "readout") else "layer"
        text = _tex(node.name) + (r"\\ " + _tex(node.detail) if node.detail else "")
        lines.append(rf"\node[{style}] ({ids[node.name]}) at (0, {i * 2.0:.1f}) {{{text}}};")
    for e in g.edges:
        if e.src not in ids or e.dst not in ids:
            continue
        a, b = ids[e.src], ids[e.dst]
        kind = e.kind if e.kind in KINDS else "bottom_up"
        style = TIKZ_STYLES[kind]
        span = abs(g.level(e.dst) - g.level(e.src))
        lab = _tex(e.label)
        if e.src == e.dst:
            lines.append(
                rf"\draw[{style}] ([yshift=2mm]{a}.east) to[out=0, in=0, looseness=6] "
                rf"node[lbl, right, text=lateral] {{{lab}}} ([yshift=-2mm]{a}.east);"
            )
        elif g.level(e.dst) > g.level(e.src) and span == 1:
            x = "-8mm" if kind == "bottom_up" else "0mm"
            side = "left" if kind == "bottom_up" else "right"
            colour = {"bottom_up": "bottomup"}.get(kind, "iogrey")
            lines.append(
                rf"\draw[{style}] ([xshift={x}]{a}.north) -- node[lbl, {side}, text={colour}] "
                rf"{{{lab}}} ([xshift={x}]{b}.south);"
            )
        elif g.level(e.dst) > g.level(e.src):
            lines.append(
                rf"\draw[{style}] ({a}.west) to[out=180, in=180, looseness={1 + 0.25 * span:.2f}] "
                rf"node[lbl, left, text=bottomup] {{{lab}}} ({b}.west);"
            )
        elif span == 1:
            lines.append(
                rf"\draw[{style}] ([xshift=8mm]{a}.south) -- node[lbl, right, text=topdown] "
                rf"{{{lab}}} ([xshift=8mm]{b}.north);"
            )
        else:
            lines.append(
                rf"\draw[{style}] ([yshift=-2mm]{a}.east) to[out=0, in=0, looseness={1 + 0.25 * span:.2f}] "
                rf"node[lbl, right, text=topdown] {{{lab}}} ([yshift=2mm]{b}.east);"
            )
    legend_y = (len(g.nodes) - 1) * 2.0
    legend = [k for k in ("bottom_up", "skip", "lateral", "top_down") if g.edges_of(k)]
    for j, k in enumerate(legend):
        y = legend_y - 0.5 * j
        lines.append(
            rf"\draw[{TIKZ_STYLES[k]}] (-7, {y:.1f}) -- (-6, {y:.1f}) node[right, font=\scriptsize, text=black] {{{KIND_NAMES[k]}}};"
        )
    lines.append(r"\end{tikzpicture}")
    if standalone:
        lines.append(r"\end{document}")
    return "\n".join(lines) + "\n"


def save_diagram(model_or_graph: Any, path: str | Path) -> tuple[Path, Path]:
    """Write ``<path>.png`` and ``<path>.tex`` (any suffix of ``path`` is replaced)."""
    g = _graph(model_or_graph)
    base = Path(path)
    base = base.with_suffix("") if base.suffix in (".png", ".tex", ".pdf") else base
    png = draw_diagram(g, base.with_suffix(".png"))
    tex = base.with_suffix(".tex")
    tex.parent.mkdir(parents=True, exist_ok=True)
    tex.write_text(diagram_tikz(g), encoding="utf-8")
    return png, tex
