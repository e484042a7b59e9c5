"""Streaming benchmark: end-of-speech → final latency, real-time factor and per-chunk cost over a long replay.

A long stream of real speech (the moonshine-voice clips and, when built, Asterisk prompts, 1 s pauses
between them, repeated to the requested length) is fed to a `StreamingSession` as fast as possible in
30 ms chunks (`edgeasr.audio.LIVE_CHUNK_MS`, what the live front ends feed). Latencies come from the
session's real-time clock (see `edgeasr.stream.session`), so they are what a live microphone would see on
this CPU. Growth is checked by comparing the mean cost of a chunk in the first and the last minute of the
replay (the same audio repeats, so they should match).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from edgeasr.audio import LIVE_CHUNK_MS as CHUNK_MS
from edgeasr.bench.cell import scrub  # result files are shared: no machine paths in them
from edgeasr.stream.turn import END_OF_TURN_MODES, TurnOptions

log = logging.getLogger(__name__)


def replay_audio(minutes: float) -> np.ndarray:
    """Real speech with 1 s pauses, repeated to `minutes` of audio."""
    from edgeasr.audio import SAMPLE_RATE, prepare_audio
    from edgeasr.data import is_built, load_manifest
    from edgeasr.registry import fetch_package, find_file
    from edgeasr.zoo.catalog import MOONSHINE_VOICE

    root = fetch_package(MOONSHINE_VOICE)
    clips = [prepare_audio(find_file(root, f"assets/{name}.wav")) for name in ("two_cities", "beckett")]
    if is_built("asterisk-en"):
        clips += [prepare_audio(u.audio) for u in load_manifest("asterisk-en")[:40]]
    pause = np.zeros(SAMPLE_RATE, np.float32)
    block = np.concatenate([part for clip in clips for part in (clip, pause)])
    repeats = int(np.ceil(minutes * 60 * SAMPLE_RATE / block.size))
    return np.tile(block, repeats)[: int(minutes * 60 * SAMPLE_RATE)]


def load_engine(spec: str):
    """A model spec (zoo name; MODEL:METHOD:W_BITS[:A_BITS[:GROUP_SIZE]], e.g. moonshine-tiny:rtn:4; a checkpoint
    or bundle path) → its Engine through `edgeasr.resolver`: the packed bundle wherever the recipe exports."""
    from edgeasr.resolver import parse_target, resolve

    return resolve(parse_target(spec))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def bench_one(spec: str, audio: np.ndarray, options) -> dict:
    from tqdm import tqdm

    from edgeasr.audio import SAMPLE_RATE
    from edgeasr.stream import LineCompleted, StreamingSession

    engine = load_engine(spec)
    session = StreamingSession(engine, options)
    chunk = SAMPLE_RATE * CHUNK_MS // 1000
    costs, finals, rss_per_minute = [], [], []
    rss_start = _rss_mb()
    for i in tqdm(range(0, audio.size, chunk), desc=f"stream {spec}", unit="chunk"):
        start = time.perf_counter()
        events = session.accept(audio[i:i + chunk])
        costs.append(time.perf_counter() - start)
        finals += [e for e in events if isinstance(e, LineCompleted)]
        if len(costs) % 600 == 0:
            rss_per_minute.append(round(_rss_mb(), 1))
    finals += [e for e in session.finish() if isinstance(e, LineCompleted)]
    per_minute = [1000 * float(np.mean(costs[m:m + 600])) for m in range(0, len(costs), 600)]
    latency = [e.latency_ms for e in finals]
    finalize = [e.finalize_ms for e in finals]
    seconds = audio.size / SAMPLE_RATE
    return {
        "model": spec, "engine": engine.describe(), "audio_seconds": seconds, "lines": len(finals),
        "latency_ms": {"median": _percentile(latency, 50), "p95": _percentile(latency, 95)},
        "finalize_ms": {"median": _percentile(finalize, 50), "p95": _percentile(finalize, 95)},
        "final_decode_ms": {"median": _percentile([e.decode_ms for e in finals], 50)},
        "rtf": sum(costs) / seconds,
        "partial_decodes": session.partial_decodes, "skipped_partials": session.skipped_partials,
        "chunk_ms_per_minute": [round(m, 2) for m in per_minute],
        "chunk_cost_growth": per_minute[-1] / per_minute[0] if len(per_minute) > 1 else None,
        "rss_mb": {"start": round(rss_start, 1), "end": round(_rss_mb(), 1), "per_minute": rss_per_minute},
        "options": {"hangover_ms": options.vad.hangover_ms, "partial_interval": options.partial_interval,
                    "final_pad_ms": options.final_pad_ms, "chunk_ms": CHUNK_MS,
                    "release_heap": options.release_heap},
    }


def _markdown(report: dict) -> str:
    rows = ["| model | audio | lines | latency median / p95 (ms) | after VAD decision median / p95 (ms) | "
            "RTF | partials done / skipped | chunk cost growth (last/first min) | RSS MB start → 1 min → end |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        growth = f"{r['chunk_cost_growth']:.2f}" if r["chunk_cost_growth"] else "n/a"
        rows.append(f"| {r['model']} | {r['audio_seconds'] / 60:.1f} min | {r['lines']} | "
                    f"{r['latency_ms']['median']} / {r['latency_ms']['p95']} | "
                    f"{r['finalize_ms']['median']} / {r['finalize_ms']['p95']} | {r['rtf']:.3f} | "
                    f"{r['partial_decodes']} / {r['skipped_partials']} | {growth} | "
                    f"{r['rss_mb']['start']} → {(r['rss_mb']['per_minute'] or ['n/a'])[0]} → "
                    f"{r['rss_mb']['end']} |")
    m = report["machine"]
    busy = max(m["load_before"], m["load_after"]) > m["cpus"]
    warning = ["**The machine was busy (load average above its CPU count): other processes shared the CPUs, "
               "RTF above 1 means the session fell behind real time, and the latencies are mostly "
               "queueing. Re-run on an idle machine before quoting them.**", ""] if busy else []
    return "\n".join([
        "# Streaming benchmark", "",
        f"{m['cpus']} CPUs ({m['processor']}), torch threads {m['torch_threads']}, load average "
        f"{m['load_before']} before / {m['load_after']} after; {report['date']}.", "", *warning,
        "Latency: end of speech (last voiced frame) → final line, on the session's real-time clock; it "
        "includes the VAD hangover. 'After VAD decision' starts when the hangover has elapsed. "
        "RTF: compute seconds per audio second, partial re-decodes included.", "", *rows, ""])


def run_stream_bench(models: list[str], out_dir: Path, minutes: float = 10.0, options=None) -> dict:
    """Benchmark each model spec on the same long replay; write stream[-hangoverN].json and .md to `out_dir`."""
    import torch

    from edgeasr.stream import SessionOptions

    audio = replay_audio(minutes)
    load_before = os.getloadavg()[0]
    options = options or SessionOptions()
    results = [bench_one(spec, audio, options) for spec in models]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "results": results,
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads(), "load_before": round(load_before, 2),
                    "load_after": round(os.getloadavg()[0], 2)},
    }
    # Runs with non-default session options keep their own files instead of replacing the default ones.
    name = "stream"
    if options.vad != SessionOptions().vad:
        name += f"-hangover{options.vad.hangover_ms}"
    if not options.release_heap:
        name += "-keep-heap"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(scrub(json.dumps(report, indent=2)) + "\n")
    (out_dir / f"{name}.md").write_text(scrub(_markdown(report)))
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=["moonshine-tiny"],
                   help="model specs: zoo name, MODEL:METHOD:W_BITS (e.g. moonshine-tiny:rtn:4), checkpoint or bundle")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the replay (default 10)")
    p.add_argument("--hangover-ms", type=int, help="VAD hangover (default: VADOptions.hangover_ms)")
    p.add_argument("--keep-heap", action="store_true",
                   help="do not return freed heap to the OS after each line (the RSS-growth comparison)")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for stream.json / stream.md")
    p.add_argument("--end-of-turn", nargs="+", choices=END_OF_TURN_MODES, metavar="MODE",
                   help="instead of the long replay: compare these end-of-turn modes (vad, smart) on sentences with "
                        "mid-sentence pauses (stream-turn.json / .md)")
    p.add_argument("--sentences", type=int, default=24, help="sentences in the end-of-turn replay (default 24)")
    p.add_argument("--turn-pause-ms", type=int, default=TurnOptions.pause_ms,
                   help=f"pause before Smart Turn scores the line (default {TurnOptions.pause_ms})")
    p.add_argument("--turn-threshold", type=float, default=TurnOptions.threshold,
                   help=f"P(turn complete) that ends the line (default {TurnOptions.threshold})")


def cli(args: argparse.Namespace) -> int:
    from edgeasr.stream import SessionOptions, VADOptions

    vad = VADOptions(hangover_ms=args.hangover_ms) if args.hangover_ms else VADOptions()
    turn = TurnOptions(pause_ms=args.turn_pause_ms, threshold=args.turn_threshold)
    options = SessionOptions(vad=vad, release_heap=not args.keep_heap, turn=turn)
    if args.end_of_turn:
        from edgeasr.bench.turn import markdown, run_turn_bench

        print(markdown(run_turn_bench(args.models, args.end_of_turn, args.out, args.sentences, options)))
        return 0
    report = run_stream_bench(args.models, args.out, args.minutes, options)
    print(_markdown(report))
    return 0
