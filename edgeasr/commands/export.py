"""`edgeasr export`: a quantized checkpoint (or an FP model) → an ONNX bundle for the edge runtime."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    # Defaults stay in ExportOptions; importing it here would pull torch into `edgeasr --help` on edge boards.
    p = sub.add_parser("export", help="write an ONNX bundle (packed MatMulNBits) for onnxruntime-only devices")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="quantized checkpoint made by `edgeasr quantize`")
    source.add_argument("--model", help="FP zoo model or transformers directory (exported unquantized)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--archive", action="store_true", help="also write OUT.edgeasr.tar (one file to copy)")
    p.add_argument("--head-bits", type=int, choices=(4, 8, 16), default=None,
                   help="bits of the tied embedding / output head (default: ExportOptions.head_bits for a "
                        "checkpoint, 16 = FP32 for --model)")
    p.add_argument("--head-group-size", type=int, choices=(16, 32, 64, 128), default=None,
                   help="columns per scale of that head (default: ExportOptions.head_group_size, 64); 32 costs a "
                        "quarter bit more per head weight and held whisper-base's 3-bit bundles together")
    p.add_argument("--front-end-bits", type=int, choices=(8, 16), default=None,
                   help="conv front end and position tables: 8 = int8 per row (default for a checkpoint), 16 = keep FP32")
    p.add_argument("--accuracy-level", type=int, choices=(0, 1, 2, 3, 4),
                   help="MatMulNBits compute of the decoder step (default 4 = int8 activations, the fast path)")
    p.add_argument("--clip-accuracy-level", type=int, choices=(0, 1, 2, 3, 4),
                   help="MatMulNBits compute of the encoder and cross-K/V graphs, which run over the whole clip "
                        "(default 1 = fp32; 4 may be faster on CPUs with int8 dot products)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from edgeasr.export.bundle import ExportOptions, export_bundle
    from edgeasr.export.card import card_notes
    from edgeasr.runtime.bundle import read_bundle

    defaults = ExportOptions()
    head_bits = args.head_bits or (defaults.head_bits if args.checkpoint else 16)
    level = defaults.accuracy_level if args.accuracy_level is None else args.accuracy_level
    clip_level = defaults.clip_accuracy_level if args.clip_accuracy_level is None else args.clip_accuracy_level
    front_end = defaults.front_end_bits if args.front_end_bits is None else args.front_end_bits
    head_group = defaults.head_group_size if args.head_group_size is None else args.head_group_size
    options = ExportOptions(head_bits=head_bits, head_group_size=head_group,
                            front_end_bits=None if front_end == 16 else front_end,
                            accuracy_level=level, clip_accuracy_level=clip_level, archive=args.archive)
    out = export_bundle(args.out, checkpoint=args.checkpoint, model_name=args.model, options=options)
    meta = read_bundle(out, verify=False).data
    for note in card_notes(meta):
        print(f"note: {note}")
    print(json.dumps({"bundle": str(out), "label": meta["label"], "content_hash": meta["content_hash"],
                      **{k: v for k, v in meta["sizes"].items() if k != "file_bytes"}}))
    return 0
