"""The `joint` sensitivity: an upgrade order measured on the whole quantized model, not one layer at a time.

Single-layer scores (`kl`, `myqasr`, `hessian`) add up the damage of layers quantized alone. They are not
additive: on moonshine-tiny, 21 layers that each moved the token distribution by almost nothing cost 7 WER
points together (docs/budgets.md). This search measures what the allocator will build. Every linear starts
at the widest width; step by step, one group (the linears of one attention or MLP sublayer of one block) is
lowered by one width: the group whose step adds the least output KL per byte saved, measured with every earlier
step applied (`TeacherForcedKL`: the decoder teacher-forced on the FP model's own greedy tokens, so no labels).
Reversed, the steps are the upgrade order of the allocator: every budget still takes a prefix of one sequence,
so the allocation stays monotone, and a group's upgrades come in width order.

Lazy greedy: a group's KL increase is re-measured only when it is the cheapest candidate; the others keep the
increase of an earlier state. A further step rarely gets cheaper as more is quantized, so the candidate that
stays cheapest after re-measuring is the one a full re-measure would pick, at a fraction of the forward passes.
Decoder candidates reuse the encoder outputs of the current state; encoder candidates re-run the encoder.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from edgeasr.metrics.bits import bundle_layer_bytes
from edgeasr.quant.budget import at_width, layout_of
from edgeasr.quant.calibrate import CalibrationClip
from edgeasr.quant.recipe import Recipe
from edgeasr.quant.spec import fake_quant_weight
from edgeasr.quant.teacher_kl import TeacherForcedKL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerGroup:
    """Linears lowered together: one sublayer (self-attention, cross-attention or MLP) of one block."""

    name: str
    part: str
    linears: tuple[tuple[str, nn.Linear], ...]
    """(recipe path, module) of each linear."""

    def bytes_at(self, width: int, recipe: Recipe) -> int:
        return sum(bundle_layer_bytes(at_width(layout_of(m.weight.shape[0], m.weight.shape[1], width, recipe.group_size,
                                                         recipe.symmetric, m.bias is not None), width, recipe.group_size_at))
                   for _, m in self.linears)


def layer_groups(linears: Iterator[tuple[str, str, nn.Linear]]) -> list[LayerGroup]:
    """Group (part, path, module) triples by their parent module: `...layers.3.self_attn.q_proj` joins
    `...layers.3.self_attn`; a block's direct linears (Whisper's fc1/fc2) form the block's MLP group."""
    groups: dict[str, tuple[str, list]] = {}
    for part, path, module in linears:
        parent = path.rsplit(".", 1)[0]
        name = parent if not parent.split(".")[-1].isdigit() else f"{parent}.mlp"
        groups.setdefault(name, (part, []))[1].append((path, module))
    return [LayerGroup(name, part, tuple(members)) for name, (part, members) in groups.items()]


@dataclass(frozen=True)
class JointResult:
    """Per linear: the measured KL of the state right after its group reached each width, and the position of
    each upgrade (to a width above the lowest) in the allocator's order."""

    kl_at: dict[str, dict[int, float]]
    rank_at: dict[str, dict[int, int]]
    forward_passes: int


@torch.inference_mode()
def joint_search(kl, groups: list[LayerGroup], recipe: Recipe, widths: tuple[int, ...]) -> JointResult:
    """The greedy elimination from every group at max(widths) to every group at min(widths); `kl` is a
    `TeacherForcedKL` built on the FP model."""
    widths = tuple(sorted(widths))
    originals = {path: m.weight.data for g in groups for path, m in g.linears}
    grids = {path: {b: fake_quant_weight(w.float(), recipe.spec_at(b)).to(w.dtype) for b in widths}
             for path, w in originals.items()}
    state = {g.name: widths[-1] for g in groups}
    by_name = {g.name: g for g in groups}

    def set_width(group: LayerGroup, width: int) -> None:
        for path, module in group.linears:
            module.weight.data = grids[path][width]

    for g in groups:
        set_width(g, widths[-1])
    passes = 0
    encoded_state: tuple | None = None
    encoded = None

    def measure(group: LayerGroup | None, width: int | None) -> float:
        """KL with `group` at `width` on top of the current state (None: the current state itself)."""
        nonlocal passes, encoded_state, encoded
        if group is not None:
            set_width(group, width)
        try:
            passes += 1
            if group is not None and group.part == "encoder":
                return kl(kl.encode())
            key = tuple(state[g.name] for g in groups if g.part == "encoder")
            if encoded_state != key:
                encoded, encoded_state = kl.encode(), key
            return kl(encoded)
        finally:
            if group is not None:
                set_width(group, state[group.name])

    def lower(name: str) -> int | None:
        i = widths.index(state[name])
        return widths[i - 1] if i else None

    current = measure(None, None)
    kl_at: dict[str, dict[int, float]] = {path: {widths[-1]: current} for g in groups for path, _ in g.linears}
    heap: list[tuple[float, int, str, int, float]] = []  # (KL per byte saved, step measured at, group, width, KL)
    step = 0

    def push(name: str) -> None:
        width = lower(name)
        if width is None:
            return
        group = by_name[name]
        value = measure(group, width)
        saved = group.bytes_at(state[name], recipe) - group.bytes_at(width, recipe)
        heapq.heappush(heap, ((value - current) / saved, step, name, width, value))

    for g in groups:
        push(g.name)
    eliminations = []
    with tqdm(total=len(groups) * (len(widths) - 1), desc="sensitivity (joint)", unit="step") as bar:
        while heap:
            _, measured_at, name, width, value = heapq.heappop(heap)
            if measured_at != step:  # stale: measured before the last step changed the model
                push(name)
                continue
            state[name] = width
            set_width(by_name[name], width)
            current = value
            step += 1
            eliminations.append((name, width))
            for path, _ in by_name[name].linears:
                kl_at[path][width] = value
            bar.update()
            bar.set_postfix(kl=f"{current:.4f}", passes=passes)
            push(name)
    for path, module in ((p, m) for g in groups for p, m in g.linears):
        module.weight.data = originals[path]
    rank_at: dict[str, dict[int, int]] = {path: {} for path in originals}
    rank = 0
    for name, width in reversed(eliminations):  # lowering to `width` reversed: the upgrade back from it
        above = widths[widths.index(width) + 1]
        for path, _ in by_name[name].linears:
            rank_at[path][above] = rank
            rank += 1
    log.info("joint: %d groups, %d steps, %d forward passes over %d clips, KL at the lowest widths %.4f",
             len(groups), len(eliminations), passes, len(kl.references), current)
    return JointResult(kl_at, rank_at, passes)


def joint_scores(backend, recipe: Recipe, clips: list[CalibrationClip], widths: tuple[int, ...],
                 linears: Iterator[tuple[str, str, nn.Linear]]):
    """`quant.sensitivity.Scores` plus each linear's upgrade ranks: (KL at each width, KL at the lowest width,
    rank of each upgrade)."""
    kl = TeacherForcedKL(backend, clips, recipe.calibration.max_decoder_tokens)
    result = joint_search(kl, layer_groups(linears), recipe, widths)
    return {path: (errors, errors[min(widths)], result.rank_at[path]) for path, errors in result.kl_at.items()}
