r"""Where a quantized checkpoint loses its words: put FP linears back, a group at a time, and measure WER again
(`python -m edgeasr.bench.fp_layers`). Torch engine (fake-quant), so it answers "which layers", not "how much on
the board". A rotated checkpoint (QuaRot) keeps its linears in another basis than the FP model: the swap is only
meaningful for methods that leave the model around its linears as it was (RTN, GPTQ, AWQ without folded scales).

    python -m edgeasr.bench.fp_layers CHECKPOINT --groups "model\.encoder\." "model\.encoder\..*self_attn" --limit 100
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from edgeasr.backends.hf import HFBackend
from edgeasr.engine import Engine
from edgeasr.evaluate import evaluate
from edgeasr.quant.checkpoint import load_checkpoint
from edgeasr.quant.job import replace_module
from edgeasr.quant.layers import QuantLinear
from edgeasr.zoo import resolve_model_dir


def fp_swap_wer(checkpoint: Path, pattern: str | None, dataset: str, limit: int | None) -> dict:
    """WER of the checkpoint with every quantized linear whose name matches `pattern` replaced by its FP original
    (None: none replaced; "" or ".": all)."""
    from transformers import AutoFeatureExtractor, AutoTokenizer

    model, processor_dir, recipe = load_checkpoint(checkpoint)
    fp = HFBackend.from_pretrained(resolve_model_dir(recipe.model)[0], recipe.model).model
    swapped = [name for name, module in model.named_modules()
               if isinstance(module, QuantLinear) and pattern is not None and re.search(pattern, name)]
    for name in swapped:
        replace_module(model, name, fp.get_submodule(name))
    backend = HFBackend(model, AutoFeatureExtractor.from_pretrained(processor_dir),
                        AutoTokenizer.from_pretrained(processor_dir), str(checkpoint))
    report = evaluate(Engine(backend, recipe.label), dataset, limit=limit, progress=False)
    return {"checkpoint": Path(checkpoint).name, "fp_layers": pattern, "swapped": len(swapped), "dataset": dataset,
            "limit": limit, "wer": round(report.wer.wer * 100, 3), "utterances": len(report.rows)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--groups", nargs="+", default=[r"model\.encoder\.", r"model\.decoder\."],
                   help="regular expressions over linear names (searched; note that `encoder` also matches the "
                        "decoder's encoder_attn), each one row, besides none and all")
    p.add_argument("--dataset", default="tts-en")
    p.add_argument("--limit", type=int, default=100, help="first N utterances")
    p.add_argument("--out", type=Path, help="append the rows (JSON lines) to this file")
    args = p.parse_args(argv)
    for pattern in [None, ".", *args.groups]:
        row = fp_swap_wer(args.checkpoint, pattern, args.dataset, args.limit)
        print(json.dumps(row), flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
