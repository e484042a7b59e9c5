"""RTN: round every weight to the nearest point of its group's min/max grid. The baseline."""

from __future__ import annotations

from dataclasses import dataclass

from edgeasr.quant.job import QuantJob, replace_module, to_quant_linear
from edgeasr.quant.methods import register


@dataclass(frozen=True)
class RTNOptions:
    """RTN has no knobs: the grid comes from the recipe's bits, group size and symmetry."""


@register("rtn", RTNOptions, calibrated=False, summary="round-to-nearest baseline")
def rtn(job: QuantJob, options: RTNOptions) -> None:
    def quantize_block(block, graph) -> None:
        for path in graph.linears:
            replace_module(block, path, to_quant_linear(block.get_submodule(path), job.w_spec_for(block, path),
                                                          job.a_spec))

    if job.a_spec.enabled and not job.a_spec.dynamic:
        job.walk(lambda ctx: quantize_block(ctx.block, ctx.graph))  # static activations need calibration inputs
        return
    for _part, block, graph in job.blocks():
        quantize_block(block, graph)
