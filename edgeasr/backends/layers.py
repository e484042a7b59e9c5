"""`LayerInfo` records and `ModelDims` of a torch (transformers) model: the torch side of `metrics.layers`.

The exporter writes these records into a bundle's metadata; the bundle runtime reads them back without torch.
"""

from __future__ import annotations

from torch import nn

from edgeasr.metrics.layers import FP_BYTES, LayerInfo, ModelDims
from edgeasr.quant.layers import QuantLinear


def model_dims(model) -> ModelDims:
    """The `ModelDims` of a transformers Whisper or Moonshine model."""
    config = model.config
    if config.model_type == "whisper":
        # 3000 mel frames (100 per second) padded to the fixed window, which conv2 halves to max_source_positions.
        window = config.max_source_positions * 2 / 100
        return ModelDims("whisper", config.encoder_attention_heads, config.decoder_attention_heads, 100.0, window)
    if config.model_type == "moonshine":
        return ModelDims("moonshine", config.encoder_num_attention_heads, config.decoder_num_attention_heads,
                         16000.0, None)
    raise ValueError(f"no cost model for model type {config.model_type!r}")


def _fp_bytes(module) -> tuple[int, int]:
    params = sum(p.numel() for p in module.parameters(recurse=False))
    return params, params * FP_BYTES


def describe_layers(model) -> list[LayerInfo]:
    """LayerInfo records for every linear, conv, embedding (and the leftover parameters) of a torch model."""
    infos: list[LayerInfo] = []
    owners: dict[int, str] = {}
    counted: set[int] = set()
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        tied_to = None
        if isinstance(weight, nn.Parameter):
            tied_to = owners.setdefault(weight.data_ptr(), name)
            tied_to = None if tied_to == name else tied_to
        if isinstance(module, QuantLinear):
            params = module.codes.numel() + (0 if module.bias is None else module.bias.numel())
            infos.append(LayerInfo(
                name, "linear", module.in_features, module.out_features, module.w_spec.bits, module.a_spec.bits,
                module.weight_bytes(), params, quant_bits=module.storage_bits().total,
                fp_in_features=0 if module.outlier_idx is None else module.outlier_idx.numel(),
                sparse_nnz=0 if module.sparse_val is None else module.sparse_val.numel(), hadamard=module.hadamard))
        elif isinstance(module, nn.Linear):
            params, stored = _fp_bytes(module)
            infos.append(LayerInfo(name, "linear", module.in_features, module.out_features, weight_bytes=stored,
                                   params=params, tied_to=tied_to))
        elif isinstance(module, nn.Conv1d):
            params, stored = _fp_bytes(module)
            infos.append(LayerInfo(name, "conv1d", module.in_channels, module.out_channels, weight_bytes=stored,
                                   params=params, kernel=module.kernel_size[0], stride=module.stride[0],
                                   padding=module.padding[0] if isinstance(module.padding, tuple) else 0,
                                   groups=module.groups))
        elif isinstance(module, nn.Embedding):
            params, stored = _fp_bytes(module)
            infos.append(LayerInfo(name, "embedding", module.num_embeddings, module.embedding_dim,
                                   weight_bytes=stored, params=params, tied_to=tied_to))
        else:
            continue
        counted.update(id(t) for t in module.parameters(recurse=False))
        counted.update(id(t) for t in module.buffers(recurse=False))
    infos += _leftover(model, counted)
    return infos


def _leftover(model, counted: set[int]) -> list[LayerInfo]:
    """One `param` record per part for the parameters no layer above owns (norms, Whisper's decoder ...)."""
    totals = {"encoder": 0, "decoder": 0}
    for name, tensor in model.named_parameters():
        if id(tensor) not in counted:
            totals["encoder" if ".encoder." in f".{name}" else "decoder"] += tensor.numel()
    return [LayerInfo(f"model.{part}.other", "param", 0, 0, weight_bytes=n * FP_BYTES, params=n)
            for part, n in totals.items() if n]
