"""Live transcription: audio chunks in, line events out, through webrtcvad and the shared Engine.

`StreamingSession(engine, options)` takes float32 16 kHz mono chunks of any size with `accept(chunk)`
and returns the events each chunk caused; `finish()` completes the open line at the end of a stream.
Decoding is the Engine's own (`transcribe_segment` for partials, `transcribe` for finals), so its
hallucination guard (no-speech / compression ratio) applies to every text shown.

How a line goes: the VAD declares speech (with pre-roll); every `partial_interval` of audio (or more:
partial cadence backs off so re-decodes take at most `partial_budget` of real time) the growing line is
re-decoded while the speaker is voiced; words on which every hypothesis of the last `commit_delay`
seconds (and the one before them) agree become the committed prefix, never the newest hypothesis's last
word, which the audio edge may cut. A re-decode of truncated audio often invents a plausible ending that
the next 300 ms confirm, so agreement must span audio time, not just two consecutive decodes. When the
VAD's hangover ends the speech, or a line longer than `max_line_seconds` reaches a pause, the line's
audio is decoded once more into the final text. Once a pause begins no partial starts; the final decode
is started speculatively during the pause, so the end decision finds it done: with the hangover alone, once
the pause is long enough that the decode (twice the session's last measured decode rate for the line's
length, plus 100 ms) still ends before the hangover, and at `final_pad_ms` until a rate was measured. The
many shorter pauses inside sentences then cost no decode (with eight streams on two cores those wasted
full-line decodes were most of the work).

End of turn (`SessionOptions.turn`, see `edgeasr.stream.turn`): with "smart", once a pause reaches
`turn.pause_ms` the open line is scored by Smart Turn on a worker thread while the speculative final
decodes (the decision costs the longer of the two, not their sum); a confident "turn complete" whose
speculative final closes a sentence ends the line at once, otherwise the line stays open until the
hangover. Each `LineCompleted` says what ended it (`ended_by`).

Partials can be left to the caller (`inline_partials=False`): `accept()` then only notes that a partial
is due (`partial_due`) and `partial()` decodes the newest audio of the open line, so a scheduler shared
by several sessions can run every `accept()` (VAD, end of turn, finals) before any partial.

Event order guarantees (tested in tests/test_stream.py):
1. Line ids are 0, 1, 2, ... in order, without gaps; at most one line is open at a time.
2. Each line emits exactly one `LineStarted` (with non-empty text), then zero or more `LineChanged`
   (each with text differing from the previous event's), then exactly one `LineCompleted`.
3. `LineCompleted` of line n comes before `LineStarted` of line n+1, and line n+1 starts no earlier
   in the audio than line n ended.
4. Within a line, every event's `committed` starts with the `committed` of every earlier event, and
   every event's `text` (the final's included) starts with its own `committed`.
5. The final text may differ from the last partial beyond the committed prefix; it is empty only when
   nothing was committed and the guard dropped the line's text.
6. Silence and audio the VAD or the guard rejects emit nothing: a line exists only once it has text.
7. After `finish()` no line is open; the session can keep accepting audio afterwards.

Timing: the session keeps a simulated real-time clock: a chunk "arrives" when its last sample would
have been captured live, and processing starts when both it and the previous chunk's processing are
done. Latencies are measured on this clock, so a fast file replay reports what a live microphone
would see on the same CPU, and partials are skipped while processing lags behind real time.
"""

from __future__ import annotations

import difflib
import re
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edgeasr.audio import SAMPLE_RATE
from edgeasr.engine import Engine
from edgeasr.heap import release_free_heap
from edgeasr.stream.events import Event, LineChanged, LineCompleted, LineStarted
from edgeasr.stream.turn import TurnOptions, closes_sentence, load_turn_model
from edgeasr.stream.vad import SpeechEnd, SpeechStart, VADOptions, VADSegmenter


@dataclass(frozen=True)
class SessionOptions:
    """How a streaming session turns speech into partial and final lines."""

    vad: VADOptions = field(default_factory=VADOptions)
    """Voice activity detection settings."""
    partial_interval: float = 0.3
    """Seconds of audio between partial re-decodes of the open line."""
    partials: bool = True
    """Emit partial text while speech goes on (off: finals only, cheapest)."""
    drop_late_partials: bool = True
    """Skip partials while processing lags real time and space them by `partial_budget`, as a live source
    needs; False decodes every one at `partial_interval` (tests, offline replays)."""
    commit_delay: float = 1.0
    """Words are committed once every hypothesis over at least this many audio seconds agrees on them."""
    max_line_seconds: float = 12.0
    """A line longer than this is completed at the next pause of `cut_pause_ms`."""
    cut_pause_ms: int = 120
    """Pause that may end an overlong line (shorter than the VAD hangover)."""
    final_pad_ms: int = 150
    """Audio kept after the last voiced frame in a final decode; also when the speculative final starts."""
    min_voiced_ms: int = 300
    """Lines with less voiced audio are never decoded: breaths and clicks decode to "You" with high confidence."""
    partial_budget: float = 0.3
    """Most of real time partial re-decodes may take: the next partial waits at least its decode time / this."""
    first_partial_ms: int = 600
    """Voiced audio before the first partial; shorter audio mostly decodes to junk that would flicker."""
    release_heap: bool = True
    """Return freed heap memory to the OS after each line (glibc): keeps a long stream's RSS flat."""
    turn: TurnOptions = field(default_factory=TurnOptions)
    """End-of-turn detection at short pauses (Smart Turn); the VAD hangover stays the cap and the fallback."""
    inline_partials: bool = True
    """Decode partials inside `accept()`; False leaves them to the caller (`partial_due` / `partial()`)."""


_NORM_RE = re.compile(r"[^\w']+")


def _norm(word: str) -> str:
    return _NORM_RE.sub("", word.lower())


def _tail_after(committed: list[str], words: list[str]) -> list[str]:
    """The words of a new hypothesis that come after the committed prefix.

    A re-decode of the whole line usually repeats the committed words; when it rewrites them, the
    matching blocks of a word alignment tell where the committed part ends in the new hypothesis.
    """
    if not committed:
        return words
    a, b = [_norm(w) for w in committed], [_norm(w) for w in words]
    if b[: len(a)] == a:
        return words[len(a):]
    blocks = [m for m in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks() if m.size]
    if not blocks:
        return words[len(a):]
    last = blocks[-1]
    return words[last.b + last.size + (len(a) - last.a - last.size):]


def _common_prefix(hypotheses: list[list[str]]) -> int:
    n = 0
    for column in zip(*hypotheses):
        if len({_norm(w) for w in column}) != 1:
            break
        n += 1
    return n


@dataclass
class _Line:
    start: int
    voiced_base: int
    line_id: int | None = None
    committed: list[str] = field(default_factory=list)
    tails: deque = field(default_factory=deque)
    """(end sample, words after the committed prefix) of recent partial hypotheses."""
    text: str = ""
    next_partial: int = 0
    speculative: tuple | None = None
    """(end sample, transcript, decode seconds) of the final decoded ahead of the end decision."""
    scored_pause: int = -1
    """Last voiced sample of the pause the end-of-turn model last scored (one score per pause)."""
    turn_probability: float | None = None


class StreamingSession:
    """Turns a stream of audio chunks into line events with one Engine (see the module docstring)."""

    def __init__(self, engine: Engine, options: SessionOptions | None = None) -> None:
        self.engine = engine
        self.options = options or SessionOptions()
        self.vad = VADSegmenter(self.options.vad)
        self._chunks: deque[tuple[int, np.ndarray]] = deque()
        self._received = 0
        self._line: _Line | None = None
        self._next_id = 0
        self._clock = 0.0
        self._chunk_arrival = 0.0
        self._chunk_clock = 0.0
        self._chunk_t0 = 0.0
        self._backlog = 0.0
        # Partials of a line longer than the model's window would hallucinate: cut before it.
        self._hard_limit = int((self.engine.backend.max_segment_seconds - 1.0) * SAMPLE_RATE)
        self.partial_decodes = 0
        self.skipped_partials = 0
        self.partial_due = False
        """A partial re-decode of the open line is due (only set with `inline_partials=False`)."""
        self.turn_model = load_turn_model(self.options.turn)
        # With an end-of-turn model the final is wanted at its first pause; the hangover alone can wait for the pad.
        pause = self.options.turn.pause_ms if self.turn_model is not None else self.options.final_pad_ms
        self._speculate_after = min(pause, self.options.final_pad_ms) * SAMPLE_RATE // 1000
        self.turn_scores = 0
        self.speculative_decodes = 0
        self.decode_rate: float | None = None
        """Seconds of final decode per second of audio, from the latest final or speculative decode (None
        before the first): how early the hangover's speculative final must start."""

    @property
    def audio_seconds(self) -> float:
        return self._received / SAMPLE_RATE

    def _now(self) -> float:
        return self._chunk_clock + (time.perf_counter() - self._chunk_t0)

    def _start_clock(self, arrival: float) -> None:
        # Work starts when its audio has arrived and the previous work is done.
        self._chunk_clock, self._chunk_t0 = max(self._clock, arrival), time.perf_counter()
        self._backlog = self._chunk_clock - arrival

    def accept(self, chunk: np.ndarray) -> list[Event]:
        """Feed float32 16 kHz mono audio; return the events it caused, in order."""
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self._chunks.append((self._received, chunk))
        self._received += chunk.size
        self._chunk_arrival = self._received / SAMPLE_RATE
        self._start_clock(self._chunk_arrival)
        events: list[Event] = []
        for decision in self.vad.push(chunk):
            if isinstance(decision, SpeechStart):
                self._line = _Line(decision.start, 0)
            elif self._line is not None and isinstance(decision, SpeechEnd):
                events += self._complete(decision.end, decision.decided_at, decision.voiced, "hangover")
        if self._line is not None and self.vad.in_speech:
            events += self._while_speaking()
        self._trim()
        self._clock = self._now()
        return events

    def finish(self) -> list[Event]:
        """Complete the open line (end of stream, Ctrl-C); return its events."""
        self._start_clock(self.audio_seconds)
        events: list[Event] = []
        if self._line is not None and self.vad.in_speech:
            end = self.vad.force_end(self.vad.last_voiced_end)
            events = self._complete(end.end, end.decided_at, end.voiced, "finish")
        self._line = None
        self.partial_due = False
        self._clock = self._now()
        return events

    def partial(self, interval_scale: float = 1.0) -> list[Event]:
        """Re-decode the open line up to the newest audio (with `inline_partials=False`); [] if none is due.

        Partials coalesce: however many were due, one decode covers all the audio received so far.
        `interval_scale` > 1 spaces the next one out (a scheduler backing off under load).
        """
        if not self.partial_due:
            return []
        self.partial_due = False
        if self._line is None or not self.vad.in_speech:
            return []  # the line ended before its partial got its turn: the final said it all
        if self.vad.trailing_silence > 0:
            return []  # a pause began meanwhile: the end decision goes first (the next voiced audio asks again)
        self._start_clock(self._chunk_arrival)
        events = self._decode_partial(interval_scale)
        self._clock = self._now()
        return events

    # -- while speech goes on -------------------------------------------------------------------

    def _while_speaking(self) -> list[Event]:
        line, vad, opts = self._line, self.vad, self.options
        length = vad.position - line.start
        pause = vad.trailing_silence
        if length >= opts.max_line_seconds * SAMPLE_RATE and pause >= opts.cut_pause_ms * SAMPLE_RATE // 1000:
            return self._cut(vad.last_voiced_end)
        if length >= self._hard_limit:
            quiet = vad.quiet_point(line.start + self._hard_limit // 2)
            return self._cut(quiet if quiet is not None else vad.position)
        if vad.voiced_samples - line.voiced_base < opts.min_voiced_ms * SAMPLE_RATE // 1000:
            return []
        if pause > 0:
            # A pause has begun: no partial now (it would delay the speculative final and the end decision);
            # the next voiced audio makes the partial due again.
            return self._in_pause(line, pause)
        if (not opts.partials or vad.position < line.next_partial
                or vad.voiced_samples - line.voiced_base < opts.first_partial_ms * SAMPLE_RATE // 1000):
            return []
        if not opts.inline_partials:
            self.partial_due = True
            return []
        # Falling behind real time: a live microphone would overflow, so drop this partial.
        if opts.drop_late_partials and self._now() - self._chunk_arrival > opts.partial_interval:
            line.next_partial = vad.position + int(opts.partial_interval * SAMPLE_RATE)
            self.skipped_partials += 1
            return []
        return self._decode_partial(1.0)

    def _in_pause(self, line: _Line, pause: int) -> list[Event]:
        """Decode the final ahead of the end decision and, with "smart", score the line beside that decode."""
        vad, pad = self.vad, self.options.final_pad_ms * SAMPLE_RATE // 1000
        score = self._submit_score(line, pause)
        if pause >= self._speculation_pause(line):
            end = vad.last_voiced_end + pad
            if line.speculative is None or line.speculative[0] != end:
                transcript, seconds = self._decode_final(line.start, end)
                line.speculative = (end, transcript, seconds)
                self.speculative_decodes += 1
        if score is not None:
            line.turn_probability = score.result()
            self.turn_scores += 1
        if not self._turn_complete(line):
            return []
        decision = vad.force_end(vad.last_voiced_end)
        return self._complete(decision.end, decision.decided_at, decision.voiced, "smart")

    def _submit_score(self, line: _Line, pause: int):
        """Start Smart Turn on the open line once per pause of `turn.pause_ms` (a Future), or None."""
        turn, vad = self.options.turn, self.vad
        if (self.turn_model is None or pause < turn.pause_ms * SAMPLE_RATE // 1000
                or line.scored_pause == vad.last_voiced_end):
            return None
        line.scored_pause, line.turn_probability = vad.last_voiced_end, None
        if turn.text_gate and self._speculative_now(line) is not None and not self._closes(line):
            return None  # the words already say the sentence goes on: no need to ask the model
        return self.turn_model.submit(self._audio(line.start, vad.position))

    def _speculation_pause(self, line: _Line) -> int:
        """Pause (samples) after which the final is decoded ahead of the end decision (see the module doc)."""
        if self.turn_model is not None or self.decode_rate is None:
            return self._speculate_after
        lead = 2 * self.decode_rate * (self.vad.position - line.start) / SAMPLE_RATE + 0.1
        return max(self._speculate_after, int((self.options.vad.hangover_ms / 1000 - lead) * SAMPLE_RATE))

    def _speculative_now(self, line: _Line):
        """The speculative final of the current pause, if it has been decoded."""
        end = self.vad.last_voiced_end + self.options.final_pad_ms * SAMPLE_RATE // 1000
        return line.speculative if line.speculative is not None and line.speculative[0] == end else None

    def _closes(self, line: _Line) -> bool:
        return closes_sentence(line.speculative[1].text)

    def _turn_complete(self, line: _Line) -> bool:
        """The current pause was scored at or above the threshold and (text gate) its final closes a sentence."""
        turn = self.options.turn
        if (line.scored_pause != self.vad.last_voiced_end or line.turn_probability is None
                or line.turn_probability < turn.threshold):
            return False
        if not turn.text_gate:
            return True
        return self._speculative_now(line) is not None and self._closes(line)

    def _decode_partial(self, interval_scale: float) -> list[Event]:
        line, vad, opts = self._line, self.vad, self.options
        self.partial_decodes += 1
        begin = time.perf_counter()
        segment, _, _ = self.engine.transcribe_segment(self._audio(line.start, vad.position), line.start / SAMPLE_RATE)
        spacing = opts.partial_interval * interval_scale
        if opts.drop_late_partials:
            # Cadence backs off with the decode's own cost, so partials never take more than
            # `partial_budget` of real time (a 30 s-window encoder would otherwise queue the finals behind them).
            spacing = max(spacing, (time.perf_counter() - begin) / opts.partial_budget)
        line.next_partial = vad.position + int(spacing * SAMPLE_RATE)
        return self._partial(segment.text, vad.position)

    def _partial(self, hypothesis: str, end: int) -> list[Event]:
        line, opts = self._line, self.options
        tail = _tail_after(line.committed, hypothesis.split())
        line.tails.append((end, tail))
        horizon = end - int(opts.commit_delay * SAMPLE_RATE)
        # Keep the newest hypothesis old enough to span the delay, and everything after it.
        while len(line.tails) > 1 and line.tails[1][0] <= horizon:
            line.tails.popleft()
        if line.tails[0][0] <= horizon:
            n = min(_common_prefix([t for _, t in line.tails]), len(tail) - 1)
            if n > 0:
                line.committed += tail[:n]
                line.tails = deque((e, t[n:]) for e, t in line.tails)
                tail = tail[n:]
        return self._show(line, " ".join(line.committed + tail), end)

    def _show(self, line: _Line, text: str, end: int) -> list[Event]:
        if not text or text == line.text:
            return []
        committed = " ".join(line.committed)
        line.text = text
        args = (line.start / SAMPLE_RATE, end / SAMPLE_RATE, text, committed)
        if line.line_id is None:
            line.line_id = self._next_id
            self._next_id += 1
            return [LineStarted(line.line_id, *args)]
        return [LineChanged(line.line_id, *args)]

    def _cut(self, at: int) -> list[Event]:
        """Complete the open line at `at` while speech goes on; the next line starts there."""
        voiced = self.vad.voiced_samples
        events = self._complete(at, self.vad.position, voiced, "cut")
        self._line = _Line(at, voiced, next_partial=at)
        return events

    # -- finals ---------------------------------------------------------------------------------

    def _decode_final(self, start: int, end: int):
        begin = time.perf_counter()
        audio = self._audio(start, end)
        # A final decided before `final_pad_ms` of pause was heard ends in digital silence instead.
        audio = np.pad(audio, (0, max(0, end - start - audio.size)))
        transcript = self.engine.transcribe(audio)
        seconds = time.perf_counter() - begin
        self.decode_rate = seconds * SAMPLE_RATE / max(audio.size, SAMPLE_RATE // 2)
        return transcript, seconds

    def _complete(self, speech_end: int, decided_at: int, voiced: int, ended_by: str) -> list[Event]:
        line, self._line = self._line, None
        self.partial_due = False
        if line is None or voiced - line.voiced_base < self.options.min_voiced_ms * SAMPLE_RATE // 1000:
            return []
        end = speech_end + self.options.final_pad_ms * SAMPLE_RATE // 1000
        if line.speculative is not None and line.speculative[0] == end:
            _, transcript, seconds = line.speculative
        else:
            transcript, seconds = self._decode_final(line.start, end)
        text = " ".join(line.committed + _tail_after(line.committed, transcript.text.split()))
        events = self._show(line, text, end) if line.line_id is None else []
        if line.line_id is None:  # nothing was ever shown and the final is empty: no line at all
            return []
        now = self._now()
        events.append(LineCompleted(
            line.line_id, line.start / SAMPLE_RATE, end / SAMPLE_RATE, text, " ".join(line.committed),
            latency_ms=1000 * (now - speech_end / SAMPLE_RATE), finalize_ms=1000 * (now - decided_at / SAMPLE_RATE),
            decode_ms=1000 * seconds, cost=transcript.cost, ended_by=ended_by,
            turn_probability=line.turn_probability, backlog_ms=1000 * self._backlog))
        # After the latency is taken: a line's decodes leave the most fragmented heap behind.
        if self.options.release_heap:
            release_free_heap()
        return events

    # -- audio buffer ---------------------------------------------------------------------------

    def _audio(self, start: int, end: int) -> np.ndarray:
        parts = [c[max(0, start - s):end - s] for s, c in self._chunks if s < end and s + c.size > start]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def _trim(self) -> None:
        """Drop audio no line can reach back to, so memory stays flat over hours."""
        opts = self.options.vad
        keep = (opts.pre_roll_ms + (opts.start_frames + 2) * opts.frame_ms) * SAMPLE_RATE // 1000
        keep_from = self._line.start if self._line is not None else self.vad.position - keep
        while self._chunks and self._chunks[0][0] + self._chunks[0][1].size <= keep_from:
            self._chunks.popleft()
