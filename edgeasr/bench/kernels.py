"""Kernel benchmark: ONNX Runtime's MatMulNBits (what bundles run) against torch's packed CPU kernels.

One linear layer at a time, on the shapes of whisper-tiny.en and moonshine-base, for a decoder step
(M = 1 row) and an encoder pass (M = positions): fp32 MatMul in both runtimes, MatMulNBits at 8 and 4
bits (block 64, int8 activations: accuracy_level 4, as exported), torch's `_weight_int8pack_mm` and
`_weight_int4pack_mm_for_cpu` (bf16 input, the fast path measured in FACTS.md) and fbgemm dynamic int8.
The question it answers: does any torch kernel beat ONNX Runtime clearly enough to be worth a second
backend? Every candidate's output is compared with the fp32 product (relative error) so a fast but
wrong kernel cannot win.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

SHAPES: tuple[tuple[str, int, int], ...] = (
    ("whisper-tiny.en fc1", 1536, 384),
    ("whisper-tiny.en fc2", 384, 1536),
    ("moonshine-base fc2", 416, 1664),
    ("whisper-tiny.en head", 51864, 384),
)
"""(name, N outputs, K inputs)."""
ROWS = {"decoder step": 1, "encoder": 1500}
"""M per call: one token, or Whisper's 1500 encoder positions."""
BLOCK = 64


def _timed(call: Callable[[], object], repeats: int) -> float:
    """Median ms per call after two warm-up calls."""
    call(), call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def _ort_candidates(w, x, threads: int) -> dict[str, Callable[[], object]]:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgeasr.export.packing import pack_quantized
    from edgeasr.export.rewrite import MS_DOMAIN, packed_initializers
    from edgeasr.quant.spec import QuantSpec, quantize_weight, weight_qparams

    n, k = w.shape
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1

    def session(node, initializers) -> Callable[[], object]:
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])], initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS_DOMAIN, 1)])
        run = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run
        feed = {"x": x.numpy()}
        return lambda: run(None, feed)[0]

    candidates = {"ort fp32 MatMul": session(helper.make_node("MatMul", ["x", "w"], ["y"]),
                                            [numpy_helper.from_array(w.T.contiguous().numpy(), "w")])}
    for bits in (8, 4):
        spec = QuantSpec(bits, symmetric=False, granularity="group", group_size=BLOCK)
        scale, zero = weight_qparams(w, spec)
        packed = pack_quantized(quantize_weight(w, scale, zero, spec), scale, zero, spec)
        node = helper.make_node("MatMulNBits", ["x", "w.B", "w.scales", "w.zero_points"], ["y"], domain=MS_DOMAIN,
                                K=k, N=n, bits=bits, block_size=BLOCK, accuracy_level=4)
        candidates[f"ort MatMulNBits W{bits}"] = session(node, packed_initializers("w", packed))
    return candidates


def _torch_candidates(w, x) -> dict[str, Callable[[], object]]:
    import torch

    n, k = w.shape
    xb = x.bfloat16()
    s8 = w.abs().amax(1) / 127
    q8 = torch.round(w / s8[:, None]).to(torch.int8)
    s8b = s8.bfloat16()
    n4 = -(-n // 16) * 16  # the int4 packer wants N in multiples of 16 (Whisper's vocabulary is not)
    grouped = torch.nn.functional.pad(w, (0, 0, 0, n4 - n)).reshape(n4, k // BLOCK, BLOCK)
    low, high = grouped.amin(-1), grouped.amax(-1)
    s4 = (high - low).clamp_min(1e-8) / 15
    codes = torch.round((grouped - low[..., None]) / s4[..., None]).clamp(0, 15).to(torch.int32).reshape(n4, k)
    packed4 = torch._convert_weight_to_int4pack_for_cpu(codes, 1)
    # the kernel dequantizes (q - 8) * scale + zero
    scales_zeros = torch.stack([s4.T, (low + 8 * s4).T], -1).bfloat16().contiguous()
    dynamic = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(k, n, bias=False)),
                                                     {torch.nn.Linear}, dtype=torch.qint8)
    with torch.no_grad():
        dynamic[0].set_weight_bias(torch.quantize_per_channel(w, s8, torch.zeros(n, dtype=torch.long), 0,
                                                              torch.qint8), None)
    return {
        "torch fp32 matmul": lambda: x @ w.T,
        "torch int8pack (bf16 in)": lambda: torch._weight_int8pack_mm(xb, q8, s8b),
        "torch int4pack (bf16 in)": lambda: torch._weight_int4pack_mm_for_cpu(xb, packed4, BLOCK, scales_zeros)[:, :n],
        "torch dynamic int8 (fbgemm)": lambda: dynamic(x),
    }


def run(threads: int, repeats: int) -> list[dict]:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rows = []
    for shape, n, k in SHAPES:
        w = torch.randn(n, k) * 0.05
        for phase, m in ROWS.items():
            if shape.endswith("head") and m > 1:
                continue  # the head runs once per decoded token only
            x = torch.randn(m, k)
            reference = (x @ w.T).numpy()
            with torch.inference_mode():
                candidates = {**_ort_candidates(w, x, threads), **_torch_candidates(w, x)}
                for name, call in candidates.items():
                    out = call()
                    out = out.float().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
                    error = float(np.linalg.norm(out - reference) / np.linalg.norm(reference))
                    rows.append({"shape": shape, "n": n, "k": k, "phase": phase, "m": m, "kernel": name,
                                 "ms": round(_timed(call, repeats), 4), "rel_error": round(error, 4)})
    return rows


def markdown(rows: list[dict], threads: int) -> str:
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    cases = list(dict.fromkeys((r["shape"], r["phase"], r["m"]) for r in rows))
    by = {(r["shape"], r["phase"], r["kernel"]): r for r in rows}
    lines = [f"# Kernel benchmark ({threads} threads, ms per call, median; relative error vs fp32 in brackets)", "",
             f"{os.cpu_count()} CPUs ({platform.machine()}), load average {os.getloadavg()[0]:.2f} at the end. "
             f"Weights quantized RTN, blocks of {BLOCK}; MatMulNBits with accuracy_level 4 (int8 activations).", "",
             "| layer (N×K) | M | " + " | ".join(kernels) + " |", "|---|---|" + "---|" * len(kernels)]
    for shape, phase, m in cases:
        cells = []
        for kernel in kernels:
            r = by.get((shape, phase, kernel))
            cells.append(f"{r['ms']:.3f} ({r['rel_error']:.3f})" if r else "")
        n, k = next((r["n"], r["k"]) for r in rows if r["shape"] == shape)
        lines.append(f"| {shape} ({n}×{k}) | {m} ({phase}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=2, help="threads of both runtimes (default 2)")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per kernel and shape (default 50)")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for kernels.json / kernels.md")


def cli(args: argparse.Namespace) -> int:
    rows = run(args.threads, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels.json").write_text(json.dumps(rows, indent=1) + "\n")
    table = markdown(rows, args.threads)
    (args.out / "kernels.md").write_text(table + "\n")
    print(table)
    return 0
