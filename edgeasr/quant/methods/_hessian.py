"""Hessian-based error compensation (the OBQ/GPTQ core) shared by GPTQ, QUIK and SpQR.

For a linear y = W x the layer-wise loss of a perturbed weight is ΔW H ΔWᵀ with H = 2 XᵀX over the
calibration inputs X. GPTQ quantizes the columns of W one after another and spreads each column's
rounding error over the columns not yet quantized, using the upper Cholesky factor of H⁻¹:

    err_j = (w_j - q(w_j)) / U_jj,    W[:, k>j] -= err_j ⊗ U[j, k>j]

Updates are applied lazily, `block_size` columns at a time (one matmul per block). With act-order the
columns are visited by decreasing H_jj and the permutation is undone at the end. Grid parameters are
fitted per group of contiguous input columns (the storage layout QuantLinear and packed kernels read)
the first time the walk touches a column of that group, from the group's *current* (already error-
compensated) values; a short last group is fine.

Methods customise the loop through `GPTQHooks`: `fit_group` (how a group's scale/zero are found: SpQR
fits them without likely outliers and quantizes them) and `column_outliers` (SpQR keeps some weights in
FP), and with `keep_fp` (QUIK's outlier input channels: never quantized, visited last, so they absorb the
error of all the others).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from edgeasr.errors import QuantizationError
from edgeasr.quant.arch import BlockGraph
from edgeasr.quant.calibrate import BlockContext
from edgeasr.quant.job import QuantJob, replace_module
from edgeasr.quant.layers import QuantLinear
from edgeasr.quant.methods._stats import InputStats, collect_input_stats
from edgeasr.quant.spec import QuantSpec, weight_qparams

log = logging.getLogger(__name__)

def sequential_stages(graph: BlockGraph) -> list[tuple[str, ...]]:
    """The block's linears in execution order, those that read the same tensor grouped together
    (q/k/v after a norm, cross-attention k/v on the encoder output), so each stage is calibrated on
    the outputs of the stages before it, already quantized ("true sequential")."""
    shared = [set(e.targets) for e in graph.edges if len(e.targets) > 1 and e.kind == "norm"]
    if len(graph.external_inputs) > 1:
        shared.append(set(graph.external_inputs))
    stages: list[tuple[str, ...]] = []
    done: set[str] = set()
    for path in graph.linears:
        if path in done:
            continue
        group = next((s for s in shared if path in s), {path})
        stage = tuple(p for p in graph.linears if p in group)
        stages.append(stage)
        done.update(stage)
    return stages


def walk_linears(job: QuantJob, quantize: Callable[[BlockContext, str, nn.Linear, InputStats], QuantLinear],
                 true_sequential: bool = True, desc: str | None = None) -> None:
    """Walk the blocks; replace each linear by `quantize(ctx, path, linear, stats)`.

    With `true_sequential` every stage's statistics are taken after the previous stages of the same block
    were quantized (one extra block pass per stage); otherwise once per block from its FP linears.
    The statistics carry the Hessian's Gram matrix and each input channel's max |x| (QUIK picks its
    outlier channels from it).
    """

    thin: dict[str, tuple[int, int]] = {}  # linear → (calibration rows, inputs) where rows < inputs

    def process(ctx: BlockContext) -> None:
        stages = sequential_stages(ctx.graph) if true_sequential else [tuple(ctx.graph.linears)]
        for stage in stages:
            stats = collect_input_stats(ctx, stage, gram=True, transformed=False)
            for path in stage:
                linear, seen = ctx.linear(path), stats.pop(path)
                if seen.n < linear.in_features:
                    thin[f"{ctx.name}.{path}"] = (seen.n, linear.in_features)
                replace_module(ctx.block, path, quantize(ctx, path, linear, seen))

    job.walk(process, desc)
    if thin:
        # Measured: whisper-base GPTQ W8 lost 1.3 WER points with 16 calibration clips and nothing with 128.
        name, (rows, width) = min(thin.items(), key=lambda item: item[1][0] / item[1][1])
        log.warning("%d linears saw fewer calibration rows than they have inputs (fewest: %s, %d rows for %d "
                    "inputs): their Hessians are rank-deficient, so error compensation may move weights along "
                    "directions calibration never exercised and overfit. Use more calibration clips "
                    "(--calib-clips) or decoder tokens.", len(thin), name, rows, width)


# ---- the GPTQ loop -----------------------------------------------------------------------------------
class GPTQHooks:
    """The points where a method changes the GPTQ loop; these defaults are plain GPTQ."""

    def __init__(self, spec: QuantSpec, clip_grid: int = 0, max_shrink: float = 0.5) -> None:
        if spec.granularity == "tensor":
            raise QuantizationError("Hessian-based methods support per-group and per-channel weight grids "
                                    "(--group-size N or 0), not one scale per tensor")
        self.spec = spec
        self.row_spec = QuantSpec(spec.bits, spec.symmetric, "channel")
        self.clip_grid = clip_grid
        self.max_shrink = max_shrink

    def start(self, weight: torch.Tensor, u_diag: torch.Tensor) -> None:
        """Called once before the loop with the weights [out, in] and diag of U, both in visiting order."""

    def fit_group(self, w: torch.Tensor, u_diag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero [out] of a group from its current values [out, cols]: min/max per row, or with
        `clip_grid` the shrunk range (ratios 1 − i/clip_grid, down to 1 − max_shrink) whose rounding error,
        weighted as GPTQ weighs it (÷ U_jj²), is smallest per row. Min/max spends most of a 2-bit grid's
        four levels on a few large weights; the search trades them for resolution where it costs least."""
        if not self.clip_grid:
            scale, zero = weight_qparams(w, self.row_spec)
            return scale[:, 0], zero[:, 0]
        ratios = 1 - torch.arange(int(self.max_shrink * self.clip_grid) + 1) / self.clip_grid  # 1 first: min/max
        scale, zero = weight_qparams(w, self.row_spec, ratios[:, None, None])  # [ratios, out, 1]
        q = quantize_column(w, scale, zero, self.spec.qmax)  # [ratios, out, cols]
        err = ((w - q).square() * u_diag.float().reciprocal().square()).sum(dim=-1)  # [ratios, out]
        best = err.argmin(dim=0, keepdim=True)  # the first (widest) of equal errors
        return scale[..., 0].gather(0, best)[0], zero[..., 0].gather(0, best)[0]

    def column_outliers(self, col: torch.Tensor, q: torch.Tensor, u_jj: torch.Tensor) -> torch.Tensor | None:
        """Bool mask [out] of the weights of this column kept in FP instead of `q` (None: none)."""
        return None


def quantize_column(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, qmax: int) -> torch.Tensor:
    """Round one column onto its grid and back (the same arithmetic as `spec.quantize_weight`)."""
    return (torch.round(w / scale + zero).clamp(0, qmax) - zero) * scale


def inverse_hessian_factor(hessian: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper Cholesky factor U of (H + λI)⁻¹ with λ = damp · mean(diag H); also the dead-column mask.

    Columns whose input was always zero get H_jj = 1 (their weights are irrelevant and set to zero).
    Damping is raised tenfold until the factorisation succeeds.
    """
    h = hessian.float().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    mean_diag = torch.diag(h).mean()
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    for attempt in range(6):
        try:
            lower = torch.linalg.cholesky(h + damp * (10 ** attempt) * mean_diag * eye)
            inverse = torch.cholesky_inverse(lower)
            return torch.linalg.cholesky(inverse, upper=True), dead
        except torch.linalg.LinAlgError:
            log.debug("Cholesky failed with damp %g; raising it", damp * 10 ** attempt)
    raise QuantizationError("the calibration Hessian is not positive definite even with heavy damping; "
                            "use more calibration clips (--calib-clips) or a larger damp option")


@dataclass
class GPTQResult:
    weight: torch.Tensor
    """[out, in] dequantized weights on the grid; FP values in `keep_fp` columns and at `outliers`."""
    scale: torch.Tensor
    """[out, n_groups]"""
    zero: torch.Tensor
    """[out, n_groups] integer-valued zero points"""
    outliers: torch.Tensor | None = None
    """[out, in] bool: weights the `column_outliers` hook kept in FP"""
    stats: dict = field(default_factory=dict)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """The column loop is thousands of tiny ops: on few cores, thread hand-offs cost more than the work
    (measured 3-4x slower with 2 threads on a 2-core machine, even though the block updates are matmuls)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, spec: QuantSpec, *, damp: float = 0.01,
                  block_size: int = 128, act_order: bool = True, static_groups: bool = False,
                  keep_fp: torch.Tensor | None = None, hooks: GPTQHooks | None = None) -> GPTQResult:
    """GPTQ on one weight matrix [out, in] given its input Hessian [in, in].

    keep_fp: input-channel indices left in FP; they are visited last and absorb everyone's error.
    static_groups: fit every group's grid up front from the original weights instead of lazily.
    """
    with single_thread():
        return _gptq(weight, hessian, spec, damp, block_size, act_order, static_groups, keep_fp, hooks)


def _gptq(weight, hessian, spec, damp, block_size, act_order, static_groups, keep_fp, hooks) -> GPTQResult:
    w_all = weight.detach().float().clone()
    out_f, in_f = w_all.shape
    hooks = hooks or GPTQHooks(spec)
    g = spec.group_width(in_f)
    n_groups = spec.n_groups(in_f)

    dead = torch.diag(hessian) == 0
    w_all[:, dead] = 0.0
    fp_mask = torch.zeros(in_f, dtype=torch.bool)
    if keep_fp is not None and keep_fp.numel():
        fp_mask[keep_fp] = True
    quant_cols = (~fp_mask).nonzero().flatten()
    if act_order:  # decreasing H_jj: the most sensitive columns first, while the most freedom is left
        quant_cols = quant_cols[torch.argsort(torch.diag(hessian)[quant_cols], descending=True, stable=True)]
    perm = torch.cat([quant_cols, fp_mask.nonzero().flatten()])
    inv_perm = torch.argsort(perm)
    n_quant = quant_cols.numel()
    u, _ = inverse_hessian_factor(hessian[perm][:, perm], damp)

    w = w_all[:, perm].contiguous()  # permuted working copy
    u_diag = torch.diag(u)
    scale = torch.ones(out_f, n_groups)
    zero = torch.zeros(out_f, n_groups)
    fitted = torch.zeros(n_groups, dtype=torch.bool)
    group_of = perm // g  # group index of each permuted position
    outliers = torch.zeros(out_f, in_f, dtype=torch.bool)
    hooks.start(w[:, :n_quant], u_diag[:n_quant])
    losses = torch.zeros(out_f)

    def fit(gi: int, values: torch.Tensor, cols: torch.Tensor) -> None:
        keep = ~fp_mask[cols]
        if not keep.any():  # a group made only of FP channels: any grid, its codes stay at the zero point
            fitted[gi] = True
            return
        s, z = hooks.fit_group(values[:, keep], u_diag[inv_perm[cols[keep]]])
        scale[:, gi], zero[:, gi] = s, z
        fitted[gi] = True

    if static_groups:
        for gi in range(n_groups):
            cols = torch.arange(gi * g, min((gi + 1) * g, in_f))
            fit(gi, w_all[:, cols], cols)

    qmax = spec.qmax
    for i1 in range(0, n_quant, block_size):
        i2 = min(i1 + block_size, n_quant)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            gi = int(group_of[j])
            if not fitted[gi]:
                # first touch of this group: fit its grid on the group's current (compensated) values
                cols = torch.arange(gi * g, min((gi + 1) * g, in_f))
                pos = inv_perm[cols]
                current = w[:, pos].clone()
                inside = pos < i2  # positions in this block: take the running copy
                current[:, inside] = w1[:, pos[inside] - i1]
                later = ~inside  # beyond the block: add the lazy updates still pending from this block
                if later.any() and i:
                    current[:, later] -= err1[:, :i] @ u[i1:j][:, pos[later]]
                fit(gi, current, cols)
            col = w1[:, i]
            q = quantize_column(col, scale[:, gi], zero[:, gi], qmax)
            d = u1[i, i]
            keep = hooks.column_outliers(col, q, d)
            if keep is not None and keep.any():
                q = torch.where(keep, col, q)
                outliers[keep, int(perm[j])] = True
            err = (col - q) / d
            losses += err.square() / 2
            w1[:, i] = q
            w1[:, i + 1:] -= err[:, None] * u1[i, i + 1:][None, :]
            err1[:, i] = err
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]

    result = w[:, inv_perm]
    result[:, dead & ~fp_mask] = 0.0
    return GPTQResult(result, scale, zero, outliers if outliers.any() else None, {"loss": float(losses.sum())})
