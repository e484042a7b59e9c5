"""Hadamard matrices and the fast Walsh–Hadamard transform that QuaRot runs online.

A width n is split as n = m · 2ᵏ with m the smallest Hadamard order that leaves a power of two:
m = 1 (n a power of two: Sylvester alone), else m = 4·(odd part of n) built by Paley's constructions
(I: m = q + 1, q ≡ 3 mod 4; II: m = 2(q + 1), q ≡ 1 mod 4; q a prime power). The orthonormal matrix is
H = (H_m ⊗ H_2ᵏ) / √n, and x·H costs n·log₂(2ᵏ) adds (the butterfly) plus n·m MACs (the m × m block),
never the n² of a dense product. The zoo's widths:

    whisper-tiny 384 = 12·32, 1536 = 12·128      whisper-base 512, 2048 (powers of two)
    moonshine-tiny 288 = 36·8, 1152 = 36·32      moonshine-base 416 = 52·8, 1664 = 52·32
    whisper-small 768 = 12·64, 3072 = 12·256

A width whose 4·(odd part) has no Paley construction (e.g. 92·2ᵏ, or any odd width) has no supported
Hadamard here and is refused with `UnsupportedWidth`; nothing falls back to a random or dense rotation.

`hadamard_transform` is written with reshapes, slices, adds, subtracts and concatenations only (plus one
m × m MatMul when m > 1), so the ONNX exporter traces it as that butterfly.
"""

from __future__ import annotations

import functools
import itertools
import math

import torch
from torch import nn

from edgeasr.errors import QuantizationError


class UnsupportedWidth(QuantizationError):
    """A width with no Hadamard construction here (no power-of-two split with a Paley block)."""


# ---- finite fields and Paley blocks ---------------------------------------------------------------------
def _prime_power(q: int) -> tuple[int, int] | None:
    """(p, e) with q = pᵉ, p prime; None otherwise."""
    if q < 2:
        return None
    p = next(d for d in range(2, q + 1) if q % d == 0)
    e = 0
    while q % p == 0:
        q, e = q // p, e + 1
    return (p, e) if q == 1 else None


def _irreducible(p: int, e: int) -> tuple[int, ...]:
    """Coefficients (low to high, monic) of an irreducible polynomial of degree e over GF(p), by search."""
    def divides(f, g):  # does monic g divide f over GF(p)?
        r = list(f)
        for shift in range(len(r) - len(g), -1, -1):
            c = r[shift + len(g) - 1]
            if c:
                for i, gi in enumerate(g):
                    r[shift + i] = (r[shift + i] - c * gi) % p
        return not any(r)

    for low in itertools.product(range(p), repeat=e):
        f = (*low, 1)
        if low[0] and not any(divides(f, (*g, 1)) for d in range(1, e // 2 + 1)
                               for g in itertools.product(range(p), repeat=d)):
            return f
    raise AssertionError(f"no irreducible polynomial of degree {e} over GF({p})")  # cannot happen


def _quadratic_character(q: int) -> tuple[list[tuple[int, ...]], dict[tuple[int, ...], int]]:
    """GF(q)'s elements (coefficient tuples) and χ: 0 → 0, nonzero squares → 1, the rest → −1."""
    p, e = _prime_power(q)
    modulus = _irreducible(p, e)

    def mul(a, b):
        prod = [0] * (2 * e - 1)
        for i, j in itertools.product(range(e), repeat=2):
            prod[i + j] = (prod[i + j] + a[i] * b[j]) % p
        for k in range(2 * e - 2, e - 1, -1):  # reduce by the monic modulus
            c = prod[k]
            for i in range(e + 1):
                prod[k - e + i] = (prod[k - e + i] - c * modulus[i]) % p
        return tuple(prod[:e])

    elements = list(itertools.product(range(p), repeat=e))
    squares = {mul(a, a) for a in elements if any(a)}
    return elements, {a: 0 if not any(a) else (1 if a in squares else -1) for a in elements}


def _jacobsthal(q: int) -> torch.Tensor:
    """Q[i, j] = χ(aᵢ − aⱼ) over GF(q)."""
    p = _prime_power(q)[0]
    elements, chi = _quadratic_character(q)
    return torch.tensor([[chi[tuple((x - y) % p for x, y in zip(a, b))] for b in elements] for a in elements],
                        dtype=torch.float64)


def _paley_order(m: int) -> str | None:
    """Which Paley construction gives a Hadamard matrix of order m (a multiple of 4), if one does."""
    if m % 4:
        return None
    if (m - 1) % 4 == 3 and _prime_power(m - 1):
        return "I"
    if (m // 2 - 1) % 4 == 1 and _prime_power(m // 2 - 1):
        return "II"
    return None


def _paley(m: int) -> torch.Tensor:
    """A ±1 Hadamard matrix of order m from Paley's construction I or II."""
    kind = _paley_order(m)
    q = m - 1 if kind == "I" else m // 2 - 1
    ones = torch.ones(q, 1, dtype=torch.float64)
    if kind == "I":  # q ≡ 3 mod 4: Q is antisymmetric; H = I + [[0, 1ᵀ], [−1, Q]]
        s = torch.cat([torch.cat([torch.zeros(1, 1, dtype=torch.float64), ones.T], 1),
                       torch.cat([-ones, _jacobsthal(q)], 1)], 0)
        return torch.eye(m, dtype=torch.float64) + s
    # q ≡ 1 mod 4: C = [[0, 1ᵀ], [1, Q]] is a symmetric conference matrix; H = C ⊗ [[1,−1],[−1,−1]] + I ⊗ [[1,1],[1,−1]]
    c = torch.cat([torch.cat([torch.zeros(1, 1, dtype=torch.float64), ones.T], 1),
                   torch.cat([ones, _jacobsthal(q)], 1)], 0)
    a = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    return torch.kron(c, a) + torch.kron(torch.eye(q + 1, dtype=torch.float64), b)


# ---- the split of a width --------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)  # asked on every forward of a rotated layer
def hadamard_factors(n: int) -> tuple[int, int]:
    """(m, 2ᵏ) with n = m · 2ᵏ and m the smallest supported Hadamard block (1 for a power of two)."""
    if n < 1:
        raise UnsupportedWidth(f"no Hadamard transform of width {n}")
    power = n & -n
    odd = n // power
    if odd == 1:
        return 1, n
    m = 4 * odd  # orders above 2 are multiples of 4, so this is the smallest block that can exist
    if power >= 4 and _paley_order(m):
        return m, n // m
    raise UnsupportedWidth(f"no Hadamard transform of width {n} here: it needs a Hadamard block of order {m}, "
                           "which Paley's constructions do not give; supported widths are 2ᵏ and m·2ᵏ with "
                           "m = q + 1 (q ≡ 3 mod 4) or 2(q + 1) (q ≡ 1 mod 4), q a prime power")


@functools.lru_cache(maxsize=None)
@torch.inference_mode(False)  # a normal tensor even when first built under inference mode
def block_matrix(m: int) -> torch.Tensor:
    """The ±1 Hadamard block of order m (m = 1: [[1]]). Cached: treat as read-only."""
    return torch.ones(1, 1) if m == 1 else _paley(m).float()


@functools.lru_cache(maxsize=None)
@torch.inference_mode(False)
def hadamard_matrix(n: int) -> torch.Tensor:
    """The explicit orthonormal n × n matrix (H_m ⊗ H_2ᵏ) / √n that `hadamard_transform` multiplies by.

    For checks and offline use (rotating stored weights goes through the fast transform too). Cached.
    """
    m, power = hadamard_factors(n)
    sylvester = torch.ones(1, 1, dtype=torch.float64)
    while sylvester.shape[0] < power:
        sylvester = torch.cat([torch.cat([sylvester, sylvester], 1), torch.cat([sylvester, -sylvester], 1)], 0)
    return (torch.kron(block_matrix(m).double(), sylvester) / math.sqrt(n)).float()


# ---- the fast transform ---------------------------------------------------------------------------------
def _unnormalized(x: torch.Tensor, block_t: torch.Tensor | None) -> torch.Tensor:
    """x · (H_m ⊗ H_2ᵏ) over the last dimension (entries ±1, not yet divided by √n)."""
    n = x.shape[-1]
    m, power = hadamard_factors(n)
    k = int(math.log2(power))
    # Row index of H_m ⊗ H_2ᵏ is i·2ᵏ + j, and H_2ᵏ = H_2 ⊗ … ⊗ H_2: one butterfly stage per axis of size 2.
    # Rows are flattened into one leading axis so the traced graph needs no shape arithmetic per stage.
    y = x.reshape(-1, m, *([2] * k))
    for axis in range(2, 2 + k):
        a, b = y.narrow(axis, 0, 1), y.narrow(axis, 1, 1)
        y = torch.cat((a + b, a - b), dim=axis)
    if m > 1:  # out[a, :] = Σ_i H_m[i, a] · y[i, :]
        y = torch.matmul(block_t, y.reshape(-1, m, power))
    return y.reshape(x.shape)


def hadamard_transform(x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """x · H (or x · Hᵀ = x · H⁻¹) over the last dimension in O(n log n): a Walsh–Hadamard butterfly on the
    power-of-two factor, then the m × m block."""
    m, _ = hadamard_factors(x.shape[-1])
    block = None if m == 1 else (block_matrix(m) if inverse else _block_t(m)).to(x)
    return _unnormalized(x, block) * (1.0 / math.sqrt(x.shape[-1]))


def rotate_hessian(hessian: torch.Tensor) -> torch.Tensor:
    """Hᵀ·G·H: the Hessian of inputs x·H from that of the inputs x (H orthogonal)."""
    return hadamard_transform(hadamard_transform(hessian).T.contiguous()).T.contiguous()


@functools.lru_cache(maxsize=None)
@torch.inference_mode(False)
def _block_t(m: int) -> torch.Tensor:
    return block_matrix(m).T.contiguous()


@functools.lru_cache(maxsize=None)
@torch.inference_mode(False)
def _scale(n: int) -> torch.Tensor:
    return torch.tensor(1.0 / math.sqrt(n))


class HadamardTransform(nn.Module):
    """x ↦ x·H as a module, for the exported graph: H_mᵀ (absent for powers of two) and 1/√n are buffers,
    one shared tensor per width, so the traced graph carries them as named constants (named after the first
    layer that traced them) and the product stays a butterfly of Reshape/Slice/Add/Sub/Concat."""

    def __init__(self, n: int) -> None:
        super().__init__()
        m, _ = hadamard_factors(n)
        self.n = n
        self.register_buffer("block_t", _block_t(m) if m > 1 else None)
        self.register_buffer("scale", _scale(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _unnormalized(x, self.block_t) * self.scale

    def extra_repr(self) -> str:
        m, power = hadamard_factors(self.n)
        return f"{self.n} = {m}·{power}"
