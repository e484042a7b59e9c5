"""End-of-turn benchmark: how soon a final follows the end of a sentence, and what it costs in cut sentences.

One replay is built from single-sentence clips (Asterisk prompts: one human speaker; and the tts-en
Harvard sentences): half of each source's sentences get a mid-sentence pause (300-500 ms of silence
inserted at the longest unvoiced gap between their 30 % and 70 % points, else at the quietest 10 ms there:
between two words), and every sentence is
followed by `gap` seconds of silence (a sentence end where the speaker's turn is over). The same replay
is streamed through a `StreamingSession` per model and per end-of-turn mode, in 30 ms chunks (what the
live front ends feed: `edgeasr-listen`'s microphone blocks and the WebSocket client's frames), partials on.
The replay uses the first `count` clips of the pools; the end-of-turn defaults were tuned on the next ones
(`build_replay(48, skip=24)`), so the reported clips took no part in choosing them.

Per model and mode: end of speech → final (the final's `latency_ms`, measured from the last voiced frame
on the session's real-time clock) median / p95; WER of the finals (each final assigned to the sentence
its middle falls in) against the offline WER of the same sentence audio (pause included) transcribed in
one piece; lines cut inside a sentence (a final whose speech ended more than 200 ms before the sentence's
last voiced frame); and what ended each line.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgeasr.audio import LIVE_CHUNK_MS as CHUNK_MS

log = logging.getLogger(__name__)

CUT_MARGIN = 0.2
"""A line that ends more than this many seconds before its sentence's last voiced frame cut the sentence."""


@dataclass
class Sentence:
    text: str
    start: float
    """Where the sentence's audio begins in the replay (seconds)."""
    voiced_end: float
    """End of its last voiced frame in the replay."""
    end: float
    """Where its audio (pause inserted, trailing silence of the clip included) ends."""
    pause: float
    """Seconds of silence inserted mid-sentence (0 = none)."""
    pause_start: float = 0.0
    """Where the inserted pause begins in the replay (seconds; meaningful when `pause` > 0)."""


def voiced_frames(clip: np.ndarray, frame: int = 480) -> np.ndarray:
    """webrtcvad's speech flag (aggressiveness 2) for each 30 ms frame of a 16 kHz clip."""
    import webrtcvad

    vad = webrtcvad.Vad(2)
    pcm = (np.clip(clip, -1, 1) * 32767).astype("<i2")
    return np.array([vad.is_speech(pcm[i:i + frame].tobytes(), 16000) for i in range(0, pcm.size - frame + 1, frame)])


def last_voiced_end(clip: np.ndarray, before: int | None = None) -> int:
    """End (samples) of the last voiced 30 ms frame in `clip[:before]`; `before` (the whole clip) if none is voiced."""
    before = clip.size if before is None else before
    voiced = np.flatnonzero(voiced_frames(clip[:before]))
    return int((voiced[-1] + 1) * 480) if voiced.size else before


def _gap_split(clip: np.ndarray, frame: int = 480) -> int:
    """Where to insert a mid-sentence pause: the middle of the longest unvoiced run between 30 % and 70 % of
    the clip's voiced span, else (no unvoiced frame there) its quietest 10 ms, usually a word boundary."""
    voiced = voiced_frames(clip, frame)
    idx = np.flatnonzero(voiced)
    first, last = (idx[0], idx[-1]) if idx.size else (0, voiced.size - 1)
    lo, hi = first + int(0.3 * (last - first)), first + int(0.7 * (last - first))
    best, run_start, best_len = None, None, 0
    for i in range(lo, hi + 1):
        if voiced[i]:
            run_start = None
            continue
        run_start = i if run_start is None else run_start
        if i - run_start + 1 > best_len:
            best, best_len = (run_start + i + 1) // 2, i - run_start + 1
    if best is not None:
        return best * frame
    step = frame // 3
    energy = [float(np.mean(clip[j:j + step] ** 2)) for j in range(lo * frame, (hi + 1) * frame, step)]
    return lo * frame + int(np.argmin(energy)) * step + step // 2


def sentence_clips(count: int, skip: int = 0) -> list[tuple[np.ndarray, str]]:
    """Single-sentence clips of 2-7 s: Asterisk prompts (human) and tts-en Harvard sentences, alternating;
    the first `skip` are left out (`skip=24` gives clips disjoint from the reported replay, for tuning)."""
    from edgeasr.audio import prepare_audio
    from edgeasr.data import is_built, load_manifest
    from edgeasr.errors import DatasetError

    pools = []
    for name in ("asterisk-en", "tts-en"):
        if not is_built(name):
            raise DatasetError(f"the end-of-turn bench needs {name}: run `edgeasr data build {name}`")
        pools.append([u for u in load_manifest(name) if 2.0 <= u.seconds <= 7.0 and len(u.text.split()) >= 4
                      and sum(u.text.count(c) for c in ".?!") <= 1 and u.text.rstrip()[-1:] in ".?!"])
    picked = [u for pair in zip(*pools) for u in pair][skip:skip + count]
    return [(prepare_audio(u.audio), u.text) for u in picked]


def build_replay(count: int = 24, gap: float = 1.5, seed: int = 0, skip: int = 0) -> tuple[np.ndarray, list[Sentence]]:
    """The replay audio and its sentences (see the module docstring); `skip` as in `sentence_clips`."""
    from edgeasr.audio import SAMPLE_RATE

    rng = np.random.default_rng(seed)
    parts, sentences, at = [], [], 0
    for i, (clip, text) in enumerate(sentence_clips(count, skip)):
        # Sentences alternate between the two sources: pauses go into half of each source's sentences.
        split = _gap_split(clip) if i % 4 < 2 else None
        pause = round(float(rng.uniform(0.3, 0.5)), 3) if split is not None else 0.0
        if split is not None:
            clip = np.concatenate([clip[:split], np.zeros(int(pause * SAMPLE_RATE), np.float32), clip[split:]])
        voiced_end = last_voiced_end(clip)
        sentences.append(Sentence(text, at / SAMPLE_RATE, (at + voiced_end) / SAMPLE_RATE,
                                  (at + clip.size) / SAMPLE_RATE, pause, (at + (split or 0)) / SAMPLE_RATE))
        parts += [clip, np.zeros(int(gap * SAMPLE_RATE), np.float32)]
        at += clip.size + int(gap * SAMPLE_RATE)
    return np.concatenate(parts), sentences


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def stream_finals(engine, audio: np.ndarray, options) -> tuple[list, dict]:
    from edgeasr.audio import SAMPLE_RATE
    from edgeasr.stream import LineCompleted, StreamingSession

    session = StreamingSession(engine, options)
    chunk = SAMPLE_RATE * CHUNK_MS // 1000
    finals, start = [], time.perf_counter()
    for i in range(0, audio.size, chunk):
        finals += [e for e in session.accept(audio[i:i + chunk]) if isinstance(e, LineCompleted)]
    finals += [e for e in session.finish() if isinstance(e, LineCompleted)]
    stats = {"rtf": round((time.perf_counter() - start) / (audio.size / SAMPLE_RATE), 3),
             "partial_decodes": session.partial_decodes, "skipped_partials": session.skipped_partials,
             "turn_scores": session.turn_scores, "turn_model": session.turn_model is not None}
    return finals, stats


def score(finals: list, sentences: list[Sentence], final_pad: float) -> dict:
    """Latency, WER of the finals, and sentences cut, of one streamed replay."""
    from edgeasr.metrics.wer import corpus_wer

    hyps: list[list[str]] = [[] for _ in sentences]
    cuts = 0
    for e in finals:
        middle = (e.start + e.end) / 2
        i = next((k for k, s in enumerate(sentences) if s.start <= middle < s.end + 1.0), None)
        if i is None:
            continue
        hyps[i].append(e.text)
        speech_end = e.end - final_pad
        if speech_end < sentences[i].voiced_end - CUT_MARGIN:
            cuts += 1
    wer = corpus_wer([s.text for s in sentences], [" ".join(h) for h in hyps])
    latency = [e.latency_ms for e in finals]
    ended = {}
    for e in finals:
        ended[e.ended_by] = ended.get(e.ended_by, 0) + 1
    # Audio time from the last voiced frame to the end decision: what the policy waits, whatever the CPU load.
    decision = [e.latency_ms - e.finalize_ms for e in finals]
    # Without the backlog: what the same CPU gives while it keeps up with real time (waiting + compute).
    kept_up = [e.latency_ms - e.backlog_ms for e in finals]
    return {"lines": len(finals), "latency_ms": {"median": _percentile(latency, 50), "p95": _percentile(latency, 95)},
            "decision_ms": {"median": _percentile(decision, 50), "p95": _percentile(decision, 95)},
            "latency_without_backlog_ms": {"median": _percentile(kept_up, 50), "p95": _percentile(kept_up, 95)},
            "wer": round(100 * wer.wer, 2), "mid_sentence_cuts": cuts, "ended_by": ended}


def run_turn_bench(models: list[str], modes: list[str], out_dir: Path, count: int = 24, base_options=None) -> dict:
    """Every model × end-of-turn mode on one replay; writes stream-turn.json and .md to `out_dir`."""
    import json

    from tqdm import tqdm

    from edgeasr.bench.cell import scrub
    from edgeasr.metrics.wer import corpus_wer
    from edgeasr.resolver import parse_target, resolve
    from edgeasr.stream import SessionOptions

    audio, sentences = build_replay(count)
    base = base_options or SessionOptions()
    load_before = os.getloadavg()
    results = []
    for spec in models:
        engine = resolve(parse_target(spec))  # as bench.stream.load_engine (which imports this module)
        clips = [audio[int(s.start * 16000):int(s.end * 16000)] for s in sentences]
        offline = corpus_wer([s.text for s in sentences],
                             [engine.transcribe(c).text for c in tqdm(clips, desc=f"offline {spec}", unit="clip")])
        for mode in modes:
            options = replace(base, turn=replace(base.turn, mode=mode))
            log.info("streaming %s with end of turn %s", spec, mode)
            finals, stats = stream_finals(engine, audio, options)
            name = Path(spec).name if Path(spec).is_dir() else spec  # a bundle folder: no machine path in results
            results.append({"model": name, "engine": engine.describe().get("engine"), "end_of_turn": mode,
                            "offline_wer": round(100 * offline.wer, 2),
                            **score(finals, sentences, options.final_pad_ms / 1000), **stats})
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "results": results,
        "replay": {"sentences": len(sentences), "with_mid_pause": sum(s.pause > 0 for s in sentences),
                   "audio_seconds": round(audio.size / 16000, 1)},
        "options": {"hangover_ms": base.vad.hangover_ms, "turn_pause_ms": base.turn.pause_ms,
                    "turn_threshold": base.turn.threshold, "final_pad_ms": base.final_pad_ms,
                    "partial_interval": base.partial_interval, "partial_budget": base.partial_budget,
                    "chunk_ms": CHUNK_MS, "tuned_on": "build_replay(48, skip=24): clips 25-72, not these"},
        "machine": {"cpus": os.cpu_count(), "load_before": [round(x, 2) for x in load_before],
                    "load_after": [round(x, 2) for x in os.getloadavg()]},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stream-turn.json").write_text(scrub(json.dumps(report, indent=2)) + "\n")
    (out_dir / "stream-turn.md").write_text(scrub(markdown(report)))
    return report


def markdown(report: dict) -> str:
    rows = ["| model | engine | end of turn | lines | end of speech → final median / p95 (ms) | same without "
            "backlog | of which waiting (audio) | finals WER % | offline WER % | mid-sentence cuts | ended by | RTF |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        ended = ", ".join(f"{k} {v}" for k, v in sorted(r["ended_by"].items()))
        rows.append(f"| {r['model']} | {r['engine']} | {r['end_of_turn']} | {r['lines']} | "
                    f"{r['latency_ms']['median']} / {r['latency_ms']['p95']} | "
                    f"{r['latency_without_backlog_ms']['median']} / {r['latency_without_backlog_ms']['p95']} | "
                    f"{r['decision_ms']['median']} / {r['decision_ms']['p95']} | {r['wer']} | {r['offline_wer']} | "
                    f"{r['mid_sentence_cuts']} | {ended} | {r['rtf']} |")
    m, o, rp = report["machine"], report["options"], report["replay"]
    busy = max(m["load_before"][0], m["load_after"][0]) > m["cpus"] / 2
    warning = [f"**Load average {m['load_before']} before / {m['load_after']} after on {m['cpus']} CPUs: other "
               "processes shared the CPUs, so the latencies include their queueing. Re-run on an idle machine "
               "before quoting them.**", ""] if busy else []
    return "\n".join([
        "# End of turn: VAD hangover vs Smart Turn", "",
        f"{rp['sentences']} single-sentence clips ({rp['with_mid_pause']} with a 300-500 ms mid-sentence pause), "
        f"{rp['audio_seconds']} s of audio; hangover {o['hangover_ms']} ms, Smart Turn scored at a "
        f"{o['turn_pause_ms']} ms pause (threshold {o['turn_threshold']}; tuned on other clips), {o['chunk_ms']} ms "
        f"chunks, partials every {o['partial_interval']} s or more (at most {o['partial_budget']} of real time); "
        f"{report['date']}; load average {m['load_before']} before / "
        f"{m['load_after']} after ({m['cpus']} CPUs).", "", *warning,
        "Latency: last voiced frame → final line on the session's real-time clock; 'waiting' is the part "
        "spent in audio time before the end decision (pause + hangover or Smart Turn's pause), which no CPU "
        "load changes; the rest is compute and queueing. 'Without backlog' leaves out the time the session was "
        "still busy with earlier audio when the deciding audio arrived (RTF above 1 on a shared CPU makes that "
        "grow without bound); compute on a loaded CPU is still slower than on an idle one. A mid-sentence cut is a "
        "line that ended more than 200 ms before its sentence's last voiced frame. Goal: median ≤ 300 ms, "
        "p95 ≤ 700 ms, finals WER ≤ offline + 0.5, no more cuts than the hangover.", "", *rows, ""])
