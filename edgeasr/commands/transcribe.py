"""`edgeasr transcribe` and `edgeasr eval`: one file, or a whole set with WER."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The ways to name what runs: a zoo model / directory, a quantized checkpoint, or a bundle."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--model", default="moonshine-tiny", help="zoo name, transformers dir or Hub id")
    group.add_argument("--checkpoint", type=Path, help="quantized checkpoint made by `edgeasr quantize`")
    group.add_argument("--bundle", type=Path, help="ONNX bundle made by `edgeasr export`")


def load_engine(args: argparse.Namespace):
    from edgeasr.engine import Engine

    return Engine.load(args.checkpoint or args.bundle or args.model)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio files")
    add_model_arguments(p)
    p.add_argument("audio", nargs="+", type=Path)
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.set_defaults(handler=run_transcribe)

    p = sub.add_parser("eval", help="WER (Whisper normalizer, corpus level) of a model on a data set")
    add_model_arguments(p)
    p.add_argument("--set", dest="sets", action="append", required=True,
                   help="data set name (see `edgeasr data list`) or manifest path; repeatable")
    p.add_argument("--limit", type=int, help="first N utterances only")
    p.add_argument("--out", type=Path, help="folder for per-utterance rows (jsonl)")
    p.set_defaults(handler=run_eval)


def run_transcribe(args: argparse.Namespace) -> int:
    from edgeasr.audio import prepare_audio
    from edgeasr.protocol import dumps

    # Read every file before loading the model: a bad file fails in a second, with its name and reason.
    audio = [(path, prepare_audio(path)) for path in args.audio]
    engine = load_engine(args)
    for path, samples in audio:
        t = engine.transcribe(samples)
        if args.json:
            print(dumps({"file": str(path), **t.to_dict()}))
        else:
            speed = f"RTFx {t.rtfx:.1f}" if t.seconds > 0 else "no speech decoded"
            print(f"{path}: {t.text}  [{t.audio_seconds:.1f}s audio, {speed}]")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from edgeasr.evaluate import evaluate

    engine = load_engine(args)
    for dataset in args.sets:
        rows = args.out / f"{engine.name.replace('/', '_')}__{Path(dataset).stem}.jsonl" if args.out else None
        report = evaluate(engine, dataset, limit=args.limit, rows_path=rows)
        print(report)
        print(json.dumps(report.summary()))
    return 0
