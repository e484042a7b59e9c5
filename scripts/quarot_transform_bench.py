"""ONNX Runtime time of QuaRot's online rotation: the traced Walsh–Hadamard butterfly vs a dense MatMul by the
same orthonormal matrix, per zoo width, for one decoder row and a 1500-row Whisper encoder pass.

    python scripts/quarot_transform_bench.py bench/results/quarot-transform.json

One intra-op thread, best of 7 × 20 runs; the machine's load average is written next to the numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from edgeasr.quant.hadamard import HadamardTransform, hadamard_matrix

WIDTHS = (288, 384, 512)
ROWS = (1, 1500)


class Dense(nn.Module):
    """x · H as one MatMul by the explicit matrix (what the bundle ran before the butterfly)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.h = nn.Parameter(hadamard_matrix(width).clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.h)


def session(module: nn.Module, width: int, path: Path) -> ort.InferenceSession:
    torch.onnx.export(module.eval(), (torch.zeros(1, 3, width),), dynamo=True, opset_version=18, optimize=False,
                      dynamic_shapes=({1: torch.export.Dim.DYNAMIC},), input_names=["x"]).save(str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def best_seconds(sess: ort.InferenceSession, x: np.ndarray) -> float:
    sess.run(None, {"x": x})
    times = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(20):
            sess.run(None, {"x": x})
        times.append((time.perf_counter() - start) / 20)
    return min(times)


def main(out: Path) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width in WIDTHS:
            sessions = {"butterfly": session(HadamardTransform(width), width, Path(tmp) / f"b{width}.onnx"),
                        "dense": session(Dense(width), width, Path(tmp) / f"d{width}.onnx")}
            for n_rows in ROWS:
                x = np.random.default_rng(0).standard_normal((1, n_rows, width)).astype(np.float32)
                row = {"width": width, "rows": n_rows,
                       **{f"{k}_us": round(best_seconds(s, x) * 1e6, 1) for k, s in sessions.items()}}
                print(row, flush=True)
                rows.append(row)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    out.write_text(json.dumps({"what": __doc__.split("\n\n")[0], "load": load, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
