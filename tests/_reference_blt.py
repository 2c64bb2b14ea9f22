"""A literal re-statement of the reference BLT forward pass (blt-reference.md section 2).

Written independently of blt_models' unroller: a numpy connection matrix (rows = source,
columns = target), every present layer computed at every step, no pruning, the reference's
return types (a tensor for the feed-forward 'b' path, a list of per-step logits otherwise).
It uses the model's edge modules, whose construction is checked separately against the tables.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def conn_matrix(shifts, num_layers: int) -> np.ndarray:
    conn = np.zeros((num_layers, num_layers))
    for i in range(num_layers):
        for j in range(num_layers):
            if i - j in shifts:
                conn[i, j] = 1
    return conn


def reference_forward(model, x: torch.Tensor, times: int):
    L = model.num_layers
    conn = conn_matrix(model.shifts, L)

    def post(k, z):
        return F.relu(getattr(model, f"norm_{k}")(z))

    s = model.pool_input(model.conv_input(x))
    outputs = [post(0, s)] + [None] * (L - 1)
    if set(model.shifts) == {-1}:  # feed-forward path: first source of each column
        for k in range(1, L):
            p = int(np.flatnonzero(conn[:, k])[0])
            outputs[k] = post(k, getattr(model, f"conv_{p}_{k}")(outputs[p]))
        return model.read_out(outputs[L - 1])
    logits = []
    for _t in range(1, times):
        new = [None] * L
        for k in range(L):
            z = None
            for i in range(L):
                if conn[i, k] == 1 and outputs[i] is not None:
                    term = getattr(model, f"conv_{i}_{k}")(outputs[i])
                    z = term if z is None else z + term
            if k == 0:
                z = s if z is None else z + s
            if z is not None:
                new[k] = post(k, z)
        outputs = new
        if outputs[L - 1] is not None:
            logits.append(model.read_out(outputs[L - 1]))
    return logits


def standard_forward(model, x: torch.Tensor, times: int) -> list[torch.Tensor]:
    """Standard unrolling: a full bottom-up sweep per step (lateral/top-down from the last step)."""
    L = model.num_layers
    conn = conn_matrix(model.shifts, L)
    s = model.pool_input(model.conv_input(x))
    prev = [None] * L
    logits = []
    for _t in range(times):
        cur = [None] * L
        for k in range(L):
            z = None
            for i in range(L):
                if conn[i, k] != 1:
                    continue
                src = cur[i] if i < k else prev[i]
                if src is not None:
                    term = getattr(model, f"conv_{i}_{k}")(src)
                    z = term if z is None else z + term
            if k == 0:
                z = s if z is None else z + s
            cur[k] = F.relu(getattr(model, f"norm_{k}")(z))
        prev = cur
        logits.append(model.read_out(cur[L - 1]))
    return logits
