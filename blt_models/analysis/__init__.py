"""Analysis of representational dynamics over model time (optional extra ``[analysis]``).

Every function takes extracted features as a plain mapping ``{layer: array [N, T, ...]}`` (numpy
or torch; N images first, then clock step T), a [`TimestepOutput`][blt_models.TimestepOutput], or any
object with a ``.features`` attribute in that layout (optionally ``.steps``, ``.first_step``,
``.image_ids``), such as the result of ``blt_models.extract.extract_features``. States are labelled
``(layer, step)`` in model time: step ``t`` is the same clock step for every layer.

>>> from blt_models import analysis as ba
>>> rdms = ba.compute_rdms(features, method="correlation")   # rsatoolbox RDMs, one per state
>>> cka = ba.cka_matrix(features, kind="angular")            # layers x steps
>>> traj = ba.mds_trajectories(ba.rdm_of_rdms(rdms), n_components=2)
>>> ba.plot_trajectories(traj, "trajectories.png")
"""

from __future__ import annotations

from .._optional import require

for _module in ("scipy", "sklearn", "matplotlib", "rsatoolbox"):  # rsatoolbox needs the others
    require(_module, "blt_models.analysis", extra="analysis")
del _module

from ._data import FeatureSet, as_feature_set  # noqa: E402
from .cka import (  # noqa: E402
    StateMatrix,
    angular_cka,
    cka_matrix,
    gram_linear,
    hsic,
    linear_cka,
)
from .diagram import (  # noqa: E402
    DiagramEdge,
    DiagramNode,
    ModelGraph,
    diagram_tikz,
    draw_diagram,
    model_graph,
    save_diagram,
)
from .plots import (  # noqa: E402
    plot_decoding,
    plot_rdm_frames,
    plot_readout,
    plot_rsa,
    plot_selectivity,
    plot_state_matrix,
    plot_temporal_tuning,
    plot_trajectories,
)
from .rdm import (  # noqa: E402
    RDM_METHODS,
    RSAResult,
    Trajectories,
    compute_rdms,
    mds_trajectories,
    rdm_matrix,
    rdm_of_rdms,
    rsa,
)
from .readout import ReadoutCurves, readout_curves  # noqa: E402
from .tuning import (  # noqa: E402
    DecodingResult,
    SelectivityResult,
    TemporalTuning,
    decode_over_time,
    dprime,
    face_selectivity,
    temporal_tuning,
    unit_responses,
)

__all__ = [
    "RDM_METHODS",
    "DecodingResult",
    "DiagramEdge",
    "DiagramNode",
    "FeatureSet",
    "ModelGraph",
    "RSAResult",
    "ReadoutCurves",
    "SelectivityResult",
    "StateMatrix",
    "TemporalTuning",
    "Trajectories",
    "angular_cka",
    "as_feature_set",
    "cka_matrix",
    "compute_rdms",
    "decode_over_time",
    "diagram_tikz",
    "dprime",
    "draw_diagram",
    "face_selectivity",
    "gram_linear",
    "hsic",
    "linear_cka",
    "mds_trajectories",
    "model_graph",
    "plot_decoding",
    "plot_rdm_frames",
    "plot_readout",
    "plot_rsa",
    "plot_selectivity",
    "plot_state_matrix",
    "plot_temporal_tuning",
    "plot_trajectories",
    "rdm_matrix",
    "rdm_of_rdms",
    "readout_curves",
    "rsa",
    "save_diagram",
    "temporal_tuning",
    "unit_responses",
]
