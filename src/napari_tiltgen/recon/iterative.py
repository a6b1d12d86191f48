"""SIRT and (ordered-subset) SART on a :class:`~napari_tiltgen.physics.projector.Projector`:
row- and column-sum weighted Landweber iterations, optional positivity; and an accelerated
(FISTA) SIRT for fitting consistent data to convergence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from napari_tiltgen.core.progress import Progress, ProgressGen, run
from napari_tiltgen.physics.geometry import ordered_subsets
from napari_tiltgen.physics.projector import (
    Projector,
)
from napari_tiltgen.recon.common import _as_data, _check_iterations, _preview, _safe_reciprocal

__all__ = ["fista_sirt_iter", "sart", "sart_iter", "sirt", "sirt_iter"]


# ---------------------------------------------------------------------------- SIRT
def sirt_iter(
    projector: Projector,
    data: Any,
    iterations: int = 100,
    relaxation: float = 1.0,
    positivity: bool = True,
    x0: torch.Tensor | None = None,
    preview_every: int = 10,
) -> ProgressGen[torch.Tensor]:
    """SIRT: ``x <- x + relaxation * C A^T R (b - A x)``, ``R = 1/(A 1)``, ``C = 1/(A^T 1)``.

    Parameters
    ----------
    projector, data
        Geometry and projections ``(n_tilts, ny, n_det)``.
    iterations
        Number of full iterations (each one forward and one back projection).
    relaxation
        Step length, in (0, 2); 1 is the classic SIRT.
    positivity
        Clip negative densities to 0 after every iteration.
    x0
        Starting volume (default zeros).
    preview_every
        Attach the central z-slice as a preview every this many iterations (0: never).

    Yields
    ------
    Progress
        One per iteration, with ``values["residual"]`` = ``||b - A x|| / ||b||``.
    """
    iterations = _check_iterations(iterations)
    b = _as_data(projector, data)
    row = _safe_reciprocal(projector.row_sums())  # builds the operator before x is allocated
    col = _safe_reciprocal(projector.column_sums()) * float(relaxation)
    x = (torch.zeros(projector.volume_shape, dtype=projector.dtype, device=projector.device)
         if x0 is None else torch.as_tensor(x0).to(projector.device, projector.dtype).clone())
    b_norm = float(torch.linalg.vector_norm(b)) or 1.0
    chunked = not projector.has_row_shifts
    for it in range(iterations):
        if chunked:
            # y-slices are independent: update chunk by chunk, no full-size temporaries
            sq = torch.zeros((), dtype=torch.float64, device=x.device)  # no GPU sync per chunk
            for y0, y1 in projector.chunks():
                xc = x[:, y0:y1, :]
                res = projector.forward_slices(xc).neg_().add_(b[:, y0:y1, :])  # b - A x
                sq += torch.linalg.vector_norm(res).double() ** 2
                res.mul_(row)
                xc.addcmul_(col, projector.adjoint_slices(res))
                if positivity:
                    xc.clamp_(min=0.0)
            rel = math.sqrt(float(sq)) / b_norm
        else:
            res = b - projector.forward(x)
            rel = float(torch.linalg.vector_norm(res)) / b_norm
            res *= row
            x += col * projector.adjoint(res)
            if positivity:
                x.clamp_(min=0.0)
        show = preview_every > 0 and ((it + 1) % preview_every == 0 or it + 1 == iterations)
        yield Progress((it + 1) / iterations, f"SIRT iteration {it + 1}/{iterations}",
                       preview=_preview(x) if show else None, values={"residual": rel})
    return x


# ---------------------------------------------------------------------------- FISTA-SIRT
def fista_sirt_iter(
    projector: Projector,
    data: Any,
    iterations: int = 100,
    x0: torch.Tensor | None = None,
    stop: Callable[[int, float], bool] | None = None,
) -> ProgressGen[torch.Tensor]:
    """SIRT with Nesterov momentum (FISTA) and positivity: the same fixed point, much sooner.

    ``x_k = max(0, y + C A^T R (b - A y))``, ``y = x_k + (t_{k-1} - 1) / t_k (x_k -
    x_{k-1})`` (Beck & Teboulle 2009): a projected gradient method on the row-weighted
    least-squares misfit in the column-weighted metric, where SIRT's unit step is the
    admissible one. On noise-free held-out series 100 of its iterations reach a lower
    reprojection error than 1000 of SIRT's (models/inpainting.md). It also fits noise that
    much sooner: meant for consistent data, with a stopping rule.

    Parameters
    ----------
    projector, data
        Geometry and projections ``(n_tilts, ny, n_det)``.
    iterations
        Most iterations (each one forward and one back projection).
    x0
        Starting volume (default zeros), clipped at zero.
    stop
        ``stop(k, residual)`` after iteration ``k`` (1-based; residual ``||b - A y|| /
        ||b||`` at the extrapolated point the iteration used): true ends the run early.

    Yields
    ------
    Progress
        One per iteration, with ``values["residual"]`` as passed to ``stop``.
    """
    iterations = _check_iterations(iterations)
    b = _as_data(projector, data)
    row = _safe_reciprocal(projector.row_sums())
    col = _safe_reciprocal(projector.column_sums())
    x = (torch.zeros(projector.volume_shape, dtype=projector.dtype, device=projector.device)
         if x0 is None else torch.as_tensor(x0).to(projector.device, projector.dtype).clamp(min=0))
    y, t = x.clone(), 1.0
    b_norm = float(torch.linalg.vector_norm(b)) or 1.0
    for it in range(iterations):
        res = b - projector.forward(y)
        rel = float(torch.linalg.vector_norm(res)) / b_norm
        res *= row
        x_new = y.addcmul_(col, projector.adjoint(res)).clamp_(min=0.0)  # y is rebuilt below
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        y = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
        yield Progress((it + 1) / iterations, f"accelerated SIRT iteration {it + 1}/{iterations}",
                       values={"residual": rel})
        if stop is not None and stop(it + 1, rel):
            break
    return x


# ---------------------------------------------------------------------------- SART
def sart_iter(
    projector: Projector,
    data: Any,
    iterations: int = 10,
    n_subsets: int = 8,
    relaxation: float = 1.0,
    positivity: bool = True,
    x0: torch.Tensor | None = None,
    preview_every: int = 1,
) -> ProgressGen[torch.Tensor]:
    """Ordered-subset SART: a SIRT update with the tilts of one subset at a time.

    The tilts are sorted by angle and dealt into ``n_subsets`` interleaved subsets (every
    ``n_subsets``-th tilt), so that every subset spans the whole tilt range; ``n_subsets =
    n_tilts`` is classic SART with one tilt per update. One iteration visits every subset once,
    so it costs about one SIRT iteration but converges several times faster.

    Parameters
    ----------
    iterations
        Passes over all subsets.
    n_subsets
        Number of ordered subsets (clipped to ``[1, n_tilts]``).
    relaxation, positivity, x0, preview_every
        As for :func:`sirt_iter`.
    """
    iterations = _check_iterations(iterations)
    b = _as_data(projector, data)
    n_sub = int(min(max(1, n_subsets), projector.n_tilts))
    subsets = ordered_subsets(projector.tilt_angles_deg, n_sub)
    x = (torch.zeros(projector.volume_shape, dtype=projector.dtype, device=projector.device)
         if x0 is None else torch.as_tensor(x0).to(projector.device, projector.dtype).clone())
    ops = []
    for idx in subsets:
        sub = projector.subset(idx)
        ops.append((sub, torch.as_tensor(idx, device=projector.device),
                    _safe_reciprocal(sub.row_sums()),
                    _safe_reciprocal(sub.column_sums()) * float(relaxation)))
    b_norm = float(torch.linalg.vector_norm(b)) or 1.0
    for it in range(iterations):
        sq = torch.zeros((), dtype=torch.float64, device=x.device)
        for sub, idx, row, col in ops:
            res = b.index_select(0, idx) - sub.forward(x)
            sq += torch.linalg.vector_norm(res).double() ** 2
            res *= row
            x += col * sub.adjoint(res)
            if positivity:
                x.clamp_(min=0.0)
        show = preview_every > 0 and ((it + 1) % preview_every == 0 or it + 1 == iterations)
        yield Progress((it + 1) / iterations,
                       f"SART iteration {it + 1}/{iterations} ({n_sub} subsets)",
                       preview=_preview(x) if show else None,
                       values={"residual": math.sqrt(float(sq)) / b_norm})
    return x


def sirt(projector: Projector, data: Any, iterations: int = 100, **kwargs: Any) -> torch.Tensor:
    """:func:`sirt_iter` run to completion."""
    return run(sirt_iter(projector, data, iterations, **kwargs), show=False)


def sart(projector: Projector, data: Any, iterations: int = 10, **kwargs: Any) -> torch.Tensor:
    """:func:`sart_iter` run to completion."""
    return run(sart_iter(projector, data, iterations, **kwargs), show=False)
