"""SpQR: small groups with quantized statistics and sparse FP outliers chosen by the GPTQ error."""

from __future__ import annotations

import pytest
import torch

from edgeasr.engine import Engine
from edgeasr.quant.methods import get_method
from edgeasr.quant.methods._hessian import gptq_quantize
from edgeasr.quant.methods._stats import InputStats
from edgeasr.quant.layers import dequantize_stat
from edgeasr.quant.methods.spqr import SpQRHooks, SpQROptions, quantize_stat
from edgeasr.quant.spec import QuantSpec
from edgeasr.registry import fetch_package, find_file
from edgeasr.zoo.catalog import MOONSHINE_VOICE
from quant_support import QUICK_CALIBRATION, fp_backend, output_error, quantized

MODEL = "moonshine-tiny"




def test_registered():
    info = get_method("spqr")
    assert info.calibrated and info.options is SpQROptions


def _values(values: torch.Tensor, bits: int, up: bool = False) -> torch.Tensor:
    codes, stats = quantize_stat(values, bits, 16, up=up)
    assert codes.dtype == torch.uint8 and stats.dtype == torch.float16 and stats.shape == (-(-values.numel() // 16), 2)
    return dequantize_stat(codes[:, None], stats[:, None, :], 16)[:, 0]


def test_quantized_statistics():
    values = torch.linspace(0.01, 0.2, 40)
    q = _values(values, 3)
    for chunk in range(3):  # at most 8 distinct values per chunk of 16 rows (the last one ragged)
        assert q[chunk * 16:(chunk + 1) * 16].unique().numel() <= 8
    assert float((q - values).abs().max()) <= (0.2 - 0.01) / 7 * 1.01  # the fp16 step may be a hair wider
    up = _values(values, 3, up=True)  # scales rounded up: a group's grid never clips its range
    assert bool((up >= values - 1e-6).all()) and float((up - values).max()) <= (0.2 - 0.01) / 7 * 1.01


def test_recipe_group_size_is_honoured():
    from edgeasr.errors import QuantizationError
    from edgeasr.quant.methods import get_method

    with pytest.raises(QuantizationError, match="group_size"):
        get_method("spqr").make_options({"group_size": 16})


def test_outliers_are_kept_sparse_and_exact():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 64, generator=gen) @ (torch.randn(64, 64, generator=gen) / 8 + torch.eye(64))
    stats = InputStats.empty(64)
    stats.add(x)
    w = torch.randn(200, 64, generator=gen)
    w[3, 10] = w[150, 33] = 25.0
    spec = QuantSpec(3, granularity="group", group_size=16)
    hooks = SpQRHooks(spec, SpQROptions())
    r = gptq_quantize(w, stats.hessian, spec, hooks=hooks)
    assert r.outliers is not None and r.outliers[3, 10] and r.outliers[150, 33]
    assert int(r.outliers.sum(0).max()) <= int(0.01 * 200)  # per-column budget
    assert float(r.weight[3, 10]) != 0.0
    err = lambda wq: float(((x @ (wq - w).T) ** 2).mean())
    no_outliers = gptq_quantize(w, stats.hessian, spec, hooks=SpQRHooks(spec, SpQROptions(outlier_threshold=0)))
    assert no_outliers.outliers is None and err(r.weight) < err(no_outliers.weight)


def test_w3_output_error_below_rtn():
    fp = fp_backend(MODEL)
    q = quantized(MODEL, "spqr", 3, group_size=16)  # the paper's β1, asked for by the recipe
    layer = q.model.model.encoder.layers[0].mlp.fc1
    assert layer.w_spec.group_size == 16 and layer.sparse_val is not None and layer.scale_codes is not None
    bits = layer.storage_bits().per_weight  # 3 + (3 + 32/16)/16 scales + 3/16 zeros + 48 bits per outlier
    assert 3.5 < bits < 4.5, bits
    err_spqr = output_error(fp, q)
    err_rtn = output_error(fp, quantized(MODEL, "rtn", 3))
    assert err_spqr < err_rtn, (err_spqr, err_rtn)


def test_w8_keeps_beckett_transcript():
    beckett = find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav")
    reference = Engine(fp_backend(MODEL), "fp").transcribe(beckett).text
    assert Engine(quantized(MODEL, "spqr", 8, 16, calibration=QUICK_CALIBRATION), "spqr-w8").transcribe(beckett).text == reference


@pytest.mark.slow
@pytest.mark.timeout(1800)  # SpQR, then a fresh trace (its sparse layout is its own): minutes on 2 busy cores
def test_statistics_round_trip_through_checkpoint_and_bundle(tmp_path):
    """The 3-bit scale codes, their fp16 pairs and the fp16 outliers come back bit-exactly from the checkpoint
    (which stores no fp scales for them) and from the bundle's initializers."""
    import numpy as np

    from edgeasr.export import ExportOptions, export_bundle
    from edgeasr.quant.api import quantize
    from edgeasr.quant.checkpoint import load_checkpoint, save_checkpoint
    from edgeasr.quant.layers import QuantLinear
    from edgeasr.quant.recipe import Recipe
    from export_support import bundle_initializers, unpack_rows

    recipe = Recipe(MODEL, "spqr", 4, 16, 16, calibration=QUICK_CALIBRATION)
    backend, _stats, location = quantize(recipe)
    path = save_checkpoint(backend.model, recipe, location, tmp_path / "checkpoint")
    loaded = dict(load_checkpoint(path)[0].named_modules())
    original = {n: m for n, m in backend.model.named_modules() if isinstance(m, QuantLinear)}
    assert all(m.scale_codes is not None for m in original.values())
    assert any(m.sparse_val is not None for m in original.values())
    names = ("codes", "scale", "zero", "scale_codes", "scale_stats", "sparse_idx", "sparse_val")
    for name, layer in original.items():
        for buffer in names:
            a, b = getattr(layer, buffer), getattr(loaded[name], buffer)
            assert (a is None and b is None) or torch.equal(a, b), (name, buffer)
    # 8-bit head, FP32 front end: the transcript below then checks what SpQR's storage does, nothing else
    bundle = export_bundle(tmp_path / "bundle", checkpoint=path, options=ExportOptions(head_bits=8, front_end_bits=None))
    inits = bundle_initializers(bundle)
    records = __import__("json").loads((bundle / "bundle.json").read_text())["weights"]["layers"]
    for name, layer in original.items():
        graph, node = inits[records[name]["graph"]], records[name]["node"]
        packed = graph[f"{node}.scale.codes"]  # [rows padded to whole chunks, ceil(groups / 2)]
        codes = unpack_rows(packed.reshape(-1), 4, packed.shape[0], layer.scale.shape[1])
        assert np.array_equal(codes[: layer.out_features], layer.scale_codes.numpy()), name
        assert np.array_equal(graph[f"{node}.scale.min"][:, 0], layer.scale_stats[..., 0].numpy()), name
        assert np.array_equal(graph[f"{node}.scale.step"][:, 0], layer.scale_stats[..., 1].numpy()), name
        if layer.sparse_val is not None:
            assert np.array_equal(graph[f"{node}.sparse_val"], layer.sparse_val.numpy()), name
            assert np.array_equal(np.stack([graph[f"{node}.sparse_rows"], graph[f"{node}.sparse_cols"]]),
                                  layer.sparse_idx.numpy()), name
        assert not any(k == f"{node}.scales" for k in graph), name  # no fp scales stored beside the codes
    # the bundle runs: the statistics expanded at load and the scattered outliers give the fake-quant transcript
    from edgeasr.runtime import OnnxBackend

    beckett = find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav")
    expected = Engine(backend, "fake-quant").transcribe(beckett).text
    assert Engine(OnnxBackend.load(bundle), "bundle").transcribe(beckett).text == expected
