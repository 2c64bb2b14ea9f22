"""Losses of the training recipe: classification and contrastive objectives over timesteps.

Every loss takes per-step tensors with the readout steps first (``[R, B, ...]``, time order, as
``model.forward_timesteps(x).logits``) and combines the steps with :func:`step_weights`, the
weighting of the BLT reference's ``SetCriterion``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "step_weights",
    "label_smoothing_ce",
    "nt_xent",
    "supcon",
    "ClassificationLoss",
    "ContrastiveLoss",
    "ProjectionHead",
]

LOSS_CHOICES = ("decay", "weighted")


def step_weights(num_steps: int, gamma: float = 0.0, choice: str = "decay") -> Tensor:
    """Normalised weights of the ``num_steps`` readouts, in time order (last = latest step).

    The last step has weight 1; the step ``s`` readouts before it has ``gamma**s`` (``"decay"``)
    or ``gamma`` (``"weighted"``); all are divided by their sum. ``gamma = 0`` trains only the
    last readout, as the reference default does.
    """
    if choice not in LOSS_CHOICES:
        raise ValueError(f"loss choice must be one of {LOSS_CHOICES}; got {choice!r}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0; got {gamma}")
    w = torch.ones(num_steps, dtype=torch.float64)
    for s in range(1, num_steps):
        w[num_steps - 1 - s] = gamma**s if choice == "decay" else gamma
    return (w / w.sum()).float()


def label_smoothing_ce(logits: Tensor, target: Tensor, smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy against the reference's smoothed targets.

    The target distribution puts ``1 - smoothing`` on the true class and ``smoothing / (K - 1)`` on
    each other class (the reference ``LabelSmoothLoss``, whose value was always 0). With
    ``smoothing = 0`` this is plain cross-entropy.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1); got {smoothing}")
    logp = F.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(-1, target[:, None]).squeeze(-1)
    if smoothing == 0.0:
        return nll.mean()
    k = logits.shape[-1]
    off = smoothing / (k - 1)
    # sum_j q_j * (-log p_j) with q = off everywhere except 1 - smoothing on the target.
    total = -logp.sum(-1)
    loss = (1.0 - smoothing - off) * nll + off * total
    return loss.mean()


def _similarity(z: Tensor, temperature: float) -> Tensor:
    z = F.normalize(z.float(), dim=-1)
    sim = z @ z.T / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    return sim.masked_fill(eye, float("-inf"))


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    """SimCLR's NT-Xent: ``z1[i]`` and ``z2[i]`` are two views of image ``i``; all other 2N - 2
    embeddings of the batch are negatives. Mean over the 2N anchors."""
    n = len(z1)
    sim = _similarity(torch.cat([z1, z2]), temperature)
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z1.device)
    return F.cross_entropy(sim, positive)


def supcon(z1: Tensor, z2: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) over the 2N views: the positives of
    an anchor are all other views with its label (its own second view included)."""
    z = torch.cat([z1, z2])
    y = torch.cat([labels, labels])
    sim = _similarity(z, temperature)
    logprob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    positive = (y[:, None] == y[None, :]) & ~eye
    count = positive.sum(1)
    per_anchor = -logprob.masked_fill(~positive, 0.0).sum(1) / count.clamp(min=1)
    return per_anchor[count > 0].mean()


class ClassificationLoss(nn.Module):
    """Loss over timesteps of the reference with label smoothing that applies its value."""

    def __init__(self, gamma: float = 0.0, choice: str = "decay", smoothing: float = 0.0) -> None:
        super().__init__()
        self.gamma, self.choice, self.smoothing = gamma, choice, smoothing
        step_weights(1, gamma, choice)  # validate early

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits [R, B, K]`` (or ``[B, K]`` for one step), ``target [B]``."""
        if logits.ndim == 2:
            logits = logits[None]
        weights = step_weights(len(logits), self.gamma, self.choice)
        loss = logits.new_zeros((), dtype=torch.float32)
        for r, w in enumerate(weights.tolist()):
            if w > 0:
                loss = loss + w * label_smoothing_ce(logits[r], target, self.smoothing)
        return loss


class ContrastiveLoss(nn.Module):
    """NT-Xent (``"simclr"``) or supervised contrastive (``"supcon"``) loss over timesteps.

    Inputs are projections ``[R, 2B, D]``: the first B rows of the batch are view 1, the last B
    view 2 of the same images. ``steps="last"`` uses the last readout only; ``"all"`` weights
    the steps as :func:`step_weights` does.
    """

    def __init__(
        self,
        kind: str = "simclr",
        temperature: float = 0.1,
        steps: str = "last",
        gamma: float = 0.0,
        choice: str = "decay",
    ) -> None:
        super().__init__()
        if kind not in ("simclr", "supcon"):
            raise ValueError(f"contrastive loss must be 'simclr' or 'supcon'; got {kind!r}")
        if steps not in ("last", "all"):
            raise ValueError(f"contrastive steps must be 'last' or 'all'; got {steps!r}")
        self.kind, self.temperature, self.steps = kind, temperature, steps
        self.gamma, self.choice = gamma, choice

    def forward(self, proj: Tensor, target: Tensor) -> Tensor:
        if proj.ndim == 2:
            proj = proj[None]
        r = len(proj)
        if self.steps == "last":
            weights = torch.zeros(r)
            weights[-1] = 1.0
        else:
            weights = step_weights(r, self.gamma, self.choice)
        b = proj.shape[1] // 2
        loss = proj.new_zeros((), dtype=torch.float32)
        for i, w in enumerate(weights.tolist()):
            if w == 0:
                continue
            z1, z2 = proj[i, :b], proj[i, b:]
            if self.kind == "simclr":
                term = nt_xent(z1, z2, self.temperature)
            else:
                term = supcon(z1, z2, target, self.temperature)
            loss = loss + w * term
        return loss


class ProjectionHead(nn.Module):
    """SimCLR's MLP projection ``Linear -> ReLU -> Linear`` applied to pooled readout features."""

    def __init__(self, in_features: int, hidden: int = 256, out_features: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
