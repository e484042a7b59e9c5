"""Per-layer bit-widths under a budget: a greedy knapsack over the widths the runtime runs packed.

Each quantizable linear has a cost at every candidate width (bundle bytes from `metrics.bits`, or effective
bits for an `--avg-bits` target) and an estimated damage (a label-free sensitivity score, see
`quant.sensitivity`). Every layer starts at the lowest width; upgrades (a layer to its next width) are
taken in order of damage removed per unit of cost, a layer's upgrades in width order. That order does not
depend on the budget, and a budget takes the longest prefix of it that fits, so

* the chosen total never exceeds the budget (a budget below the all-lowest cost is an error), and
* the allocation is monotone: a larger budget takes a longer prefix, so no layer ever gets fewer bits.

The price of monotonicity: the budget left after the first upgrade that does not fit stays unspent (at
most that one upgrade's cost), where a fill-in pass could have used it for a cheaper, later upgrade.
No torch here: counts and scores only.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, replace

from edgeasr.errors import QuantizationError
from edgeasr.metrics.bits import GridLayout, bundle_layer_bytes, layer_bits

PACKED_BITS = (2, 4, 8)
"""Widths MatMulNBits runs packed; 3, 5-7 would sit in the next container and cost its bytes."""
MB = 10**6
"""A budget's megabyte, as the size readouts count it."""
ESTIMATORS = ("myqasr", "kl", "joint", "hessian", "method")
"""Label-free sensitivity estimators (`quant.sensitivity`), the default first; named here, torch-free, for the CLI."""


@dataclass(frozen=True)
class LayerChoice:
    """One quantizable layer: what each candidate width costs and how much it is estimated to hurt."""

    path: str
    """Module path of the linear (the recipe's `layer_bits` key)."""
    cost_at: Mapping[int, int]
    """Cost at each candidate width (bundle bytes, or effective bits)."""
    error_at: Mapping[int, float]
    """Estimated damage at each candidate width (same keys as `cost_at`)."""
    rank_at: Mapping[int, int] | None = None
    """Position of the upgrade to each width above the lowest in an order measured as a whole (`joint`): when
    every layer has one, the allocator takes upgrades in this order instead of by damage per cost."""

    @property
    def widths(self) -> list[int]:
        return sorted(self.cost_at)


@dataclass(frozen=True)
class Allocation:
    """Bits chosen per layer and the cost they add up to."""

    bits: dict[str, int]
    cost: int
    budget: int

    @property
    def histogram(self) -> dict[int, int]:
        """Layers per width."""
        counts: dict[int, int] = {}
        for b in self.bits.values():
            counts[b] = counts.get(b, 0) + 1
        return dict(sorted(counts.items()))


def layout_of(out_features: int, in_features: int, bits: int, group_size: int, symmetric: bool = False,
              bias: bool = False) -> GridLayout:
    """The grid a plain (RTN/GPTQ/AWQ) layer stores at `bits`; group_size 0 = one scale per row."""
    return GridLayout(out_features, in_features, bits, group_size or in_features, symmetric, bias=bias)


def at_width(layout: GridLayout, bits: int, group_at: Mapping[int, int] | None = None) -> GridLayout:
    """The layer's grid at `bits`, with that width's group size from `group_at` (`Recipe.group_size_at`)."""
    group = (group_at or {}).get(bits)
    return replace(layout, bits=bits, group_width=min(group, layout.in_features) if group else layout.group_width)


def byte_costs(layout: GridLayout, widths: tuple[int, ...] = PACKED_BITS,
               group_at: Mapping[int, int] | None = None) -> dict[int, int]:
    """Bundle bytes of the layer at each width (`metrics.bits.bundle_layer_bytes`)."""
    return {b: bundle_layer_bytes(at_width(layout, b, group_at)) for b in widths}


def bit_costs(layout: GridLayout, widths: tuple[int, ...] = PACKED_BITS,
              group_at: Mapping[int, int] | None = None) -> dict[int, int]:
    """Effective bits of the layer at each width (`metrics.bits.layer_bits`)."""
    return {b: layer_bits(at_width(layout, b, group_at)).total for b in widths}


def ranked_order(layers: list[LayerChoice]) -> list[tuple[str, int, int]]:
    """The upgrades (path, new width, added cost) in the order of their `rank_at`."""
    upgrades = []
    for layer in layers:
        widths = layer.widths
        if sorted(layer.rank_at) != widths[1:]:
            raise QuantizationError(f"{layer.path}: ranks for widths {sorted(layer.rank_at)}, expected {widths[1:]}")
        ranks = [layer.rank_at[b] for b in widths[1:]]
        if ranks != sorted(ranks):
            raise QuantizationError(f"{layer.path}: its upgrades must come in width order, got ranks {ranks}")
        upgrades += [(layer.rank_at[new], layer.path, new, layer.cost_at[new] - layer.cost_at[old])
                     for old, new in zip(widths, widths[1:])]
    return [(path, new, added) for _, path, new, added in sorted(upgrades)]


def upgrade_order(layers: list[LayerChoice]) -> list[tuple[str, int, int]]:
    """Every upgrade (path, new width, added cost) in the order the allocator takes them: the measured order
    when every layer has ranks (`ranked_order`), otherwise most damage removed per unit of cost first; a layer's
    next upgrade enters the queue once the previous one is taken. Ties go to the earlier layer, so the order is
    deterministic."""
    if all(layer.rank_at is not None for layer in layers):
        return ranked_order(layers)
    position = {layer.path: i for i, layer in enumerate(layers)}
    by_path = {layer.path: layer for layer in layers}
    heap: list[tuple[float, int, str, int]] = []

    def push(layer: LayerChoice, current: int) -> None:
        widths = layer.widths
        nxt = widths.index(current) + 1
        if nxt == len(widths):
            return
        new = widths[nxt]
        added = layer.cost_at[new] - layer.cost_at[current]
        if added <= 0:
            raise QuantizationError(f"{layer.path}: {new} bits must cost more than {current}")
        gain = layer.error_at[current] - layer.error_at[new]
        heapq.heappush(heap, (-gain / added, position[layer.path], layer.path, new))

    for layer in layers:
        push(layer, layer.widths[0])
    order = []
    while heap:
        _, _, path, new = heapq.heappop(heap)
        layer = by_path[path]
        previous = layer.widths[layer.widths.index(new) - 1]
        order.append((path, new, layer.cost_at[new] - layer.cost_at[previous]))
        push(layer, new)
    return order


def allocate(layers: list[LayerChoice], budget: int) -> Allocation:
    """Bits per layer whose total cost is at most `budget` (see the module docstring)."""
    if not layers:
        raise QuantizationError("no quantizable layers to allocate bits to")
    paths = [layer.path for layer in layers]
    if len(set(paths)) != len(paths):
        raise QuantizationError("layer paths must be unique")
    bits = {layer.path: layer.widths[0] for layer in layers}
    cost = sum(layer.cost_at[layer.widths[0]] for layer in layers)
    if cost > budget:
        raise QuantizationError(f"the budget ({budget:,}) is below the cost of every layer at its lowest width "
                                f"({cost:,}): nothing fits")
    for path, new, added in upgrade_order(layers):
        if cost + added > budget:
            break
        bits[path] = new
        cost += added
    return Allocation(bits, cost, budget)
