"""The Gradio demo: its pieces on real data, and the real app driven by a browser as a first-time user would.

The browser tests start the app on 127.0.0.1 (a free port, in this process) and drive Debian's
chromium through Playwright, one flow per test: an upload or a recording (Chromium's fake microphone
playing real speech) clears the reference, a file that is not audio gets one message and the app keeps
working, W2 on speech still shows every model readout, switching recipe in Live resets the labelled
readouts, and the Study page is short with its plots.
Screenshots go to tests/artifacts/ (git-ignored); the committed copies in docs/screenshots/ are
refreshed from them when EDGEASR_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import struct
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soxr

from edgeasr.audio import SAMPLE_RATE, write_wav
from edgeasr.engine import Engine, GuardOptions

from edgeasr.demo import facts
from edgeasr.demo.engines import FP, EngineKey
from edgeasr.demo.estimates import announce, estimate
from edgeasr.demo.inputs import UNREADABLE, ClipError, load_clip
from edgeasr.demo.outcome import no_text_reason, voiced
from edgeasr.demo.plots import study_figure
from edgeasr.demo.readouts import NO_LINE, Column, table
from edgeasr.demo.study import load_results, summary
from edgeasr.demo.tabs import live

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
MODEL = "moonshine-tiny"
# Generous bounds: a cold CI machine quantizes, exports and loads before the first comparison finishes.
UI_TIMEOUT_MS = 240_000
STUDY_MAX_HEIGHT_PX = 6000


def _words(text: str) -> str:
    return re.sub(r"[^a-z ]", "", text.lower())


def _facts(bits: int, kind: str = "bundle") -> facts.EngineFacts:
    return facts.EngineFacts(kind=kind, kind_note=None, w_bits=bits, weight_bytes=31_019_904,
                             fp16_weight_bytes=54_185_472, effective_bits=None if bits == 16 else 3.25,
                             total_bytes=35_000_000, resident_bytes=120_000_000)


# -- pieces without a model -------------------------------------------------------------------------

def test_model_readouts_hold_without_text():
    """No final line: measured rows say so, model-only rows keep their numbers; conventions are stated."""
    text = table([Column("m · FP", _facts(16), None), Column("m · RTN W3A16", _facts(3, "torch"), None)])
    weight_row = next(line for line in text.splitlines() if line.startswith("| Weight memory"))
    assert weight_row.count("31.02 MB") == 2 and "1.00×" in weight_row
    assert next(line for line in text.splitlines() if line.startswith("| Latency")).count(NO_LINE) == 2
    assert "16 (FP16)" in text and "3.25" in text and "120.00 MB" in text and "35.00 MB" in text
    assert "Baseline: FP = FP16" in text
    assert "W3 codes are stored in 4-bit containers" in text and "*torch*" in text


def _float_wav(path: Path, samples: np.ndarray) -> Path:
    """A 32-bit IEEE-float WAV (format 3): the one WAV flavour that can carry NaN."""
    data = samples.astype("<f4").tobytes()
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16, 3, 1, SAMPLE_RATE,
                         SAMPLE_RATE * 4, 4, 32, b"data", len(data))
    path.write_bytes(header + data)
    return path


def test_unusable_uploads_get_one_message(tmp_path):
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("these are meeting notes, not audio\n" * 20)
    empty = tmp_path / "empty.wav"
    write_wav(empty, np.zeros(0, np.float32))
    nan = _float_wav(tmp_path / "nan.wav", np.full(SAMPLE_RATE, math.nan, np.float32))
    for path in (not_audio, empty, nan):
        with pytest.raises(ClipError) as caught:
            load_clip(path)
        message = str(caught.value)
        assert message.startswith(UNREADABLE.split("(")[0]) and path.name in message, message
        assert str(tmp_path) not in message and "ffmpeg" not in message.lower(), message
    assert "a text file, not audio" in str(pytest.raises(ClipError, load_clip, not_audio).value)
    speech = tmp_path / "tone.wav"
    write_wav(speech, 0.1 * np.sin(np.arange(SAMPLE_RATE) / 10).astype(np.float32))
    assert load_clip(speech).size == SAMPLE_RATE


def _sweep_rows(tmp_path: Path) -> Path:
    rows = [{"key": str(b), "recipe": {"model": "m", "method": "rtn", "w_bits": b, "a_bits": 16},
             "wer": {"wer": w}, "cost": {"memory_io_bytes": 2e8 * b}, "weight_bytes": 3e6 * b,
             "quantize_seconds": 0.4, "checkpoint_cached": False, "threads": 1}
            for b, w in ((8, 0.5), (4, 0.07), (2, 0.9), (8, 0.05))]
    rows += [{"key": f"awq{b}", "model": "m", "method": "awq", "w_bits": b, "a_bits": 16, "wer": 0.03,
              "weight_bytes": 3e6 * b, "quantize_seconds": s, "checkpoint_cached": False, "threads": 1}
             for b, s in ((4, 170.0), (3, 190.0))]
    rows.append({"key": "fp", "model": "m", "method": "fp", "w_bits": 16, "a_bits": 16, "wer": 0.02,
                 "weight_bytes": 4.8e7, "quantize_seconds": 0.0, "checkpoint_cached": None, "threads": 1})
    lines = "\n".join(map(json.dumps, rows)) + "\n{\"half-written"
    (tmp_path / "sweep.jsonl").write_text(lines, encoding="utf-8")
    # A per-utterance log (no model, no method) is not a study cell.
    (tmp_path / "utterances.jsonl").write_text(json.dumps({"id": "x", "wer": 0.5}) + "\n", encoding="utf-8")
    return tmp_path


def test_study_results_loader(tmp_path):
    assert load_results(tmp_path / "missing").empty
    results = load_results(_sweep_rows(tmp_path))
    rtn = results.table[results.table["method"] == "rtn"]
    # The re-run cell "8" replaces its first row; fractions become percent; the utterance log is left out.
    assert list(rtn["w_bits"]) == [4, 2, 8] and list(rtn["wer_percent"]) == [7.0, 90.0, 5.0]
    assert list(rtn["memory_io_mb"]) == [800.0, 400.0, 1600.0]
    assert len(results.table) == 6 and list(results.filtered(["m"], ["gptq"]).index) == []
    assert results.choices("method") == ["awq", "fp", "rtn"]

    table_ = summary(results.table)
    assert list(table_.columns[:3]) == ["model", "method", "FP16"]
    assert table_.set_index("method").loc["rtn", "W2A16"] == "90.00"

    figure = study_figure(results.table, "test set")
    assert len(figure.axes) == 2
    bits_ax, memory_ax = figure.axes
    assert bits_ax.get_xlabel().startswith("Weight bits") and memory_ax.get_xlabel().startswith("Stored weight")
    assert bits_ax.get_xlim()[0] < 2 and bits_ax.get_xlim()[1] > 8, "points at 2 and 8 bits must not sit on the edge"
    assert bits_ax.get_ylim()[1] > 90, "the whole WER range is shown"
    assert [t.get_text() for t in figure.legends[0].get_texts()][:2] == ["rtn", "awq"]


def test_slow_recipes_are_announced(tmp_path):
    results = _sweep_rows(tmp_path)
    awq = estimate(EngineKey.of("m", "awq", 4), results)
    assert awq.seconds == 170.0 and awq.slow
    assert "about 3 min" in announce(EngineKey.of("m", "awq", 4), results)
    # Bits without a record of their own fall back to the method's median on that model.
    assert estimate(EngineKey.of("m", "awq", 2), results).seconds == 180.0
    assert "a few seconds" in announce(EngineKey.of("m", "rtn", 4), results)
    assert announce(EngineKey.of("m", FP, 16), results) == ""


# -- pieces on a real model ---------------------------------------------------------------------------

def test_live_handler_streams_chunked_speech(speech_clips):
    """Browser-like chunks (48 kHz int16, 0.5 s) of beckett → finals with readouts; sessions stay apart."""
    audio48 = soxr.resample(speech_clips["beckett"], SAMPLE_RATE, 48_000)
    pcm = (np.clip(audio48, -1, 1) * 32767).astype(np.int16)
    state = None
    for start in range(0, pcm.size, 24_000):
        state, transcript, readouts, _lag, _status = live.live_chunk((48_000, pcm[start:start + 24_000]), state,
                                                                     MODEL, FP, 4)
    state, transcript, readouts, _lag, status = live.live_stop(state, MODEL, FP, 4)
    assert "ever tried" in _words(state.text) and "better" in _words(state.text)
    assert state.finals and all(line.text in transcript for line in state.finals)
    assert re.search(r"Latency.*\| \d+ ms", readouts) and "BOPs" in readouts
    assert f"Readouts of {MODEL} · FP" in readouts and "engine" in status

    # A second browser session starts empty: per-session state, shared engine.
    other, other_text, *_ = live.live_chunk((SAMPLE_RATE, np.zeros(8000, np.float32)), None, MODEL, FP, 4)
    assert other is not state and other.session is not state.session and not other.finals
    assert other.session.engine is state.session.engine
    assert other_text == live.EMPTY_TRANSCRIPT


def test_unsupported_recipe_is_a_ui_message(tmp_path):
    with pytest.raises(gr.Error, match="unknown method 'no-such-method'"):
        list(live.prepare(MODEL, "no-such-method", 4, None, results_dir=tmp_path))


def test_silence_and_silent_model_are_told_apart(speech_clips):
    """Silence → "no speech detected"; speech whose every output the guard drops → said so, not silence."""
    engine = facts.load(EngineKey.of(MODEL, FP, 16))
    silence = np.zeros(2 * SAMPLE_RATE, np.float32)
    assert no_text_reason(engine, silence, voiced(engine, silence)).startswith("(no speech detected")
    # Real model and guard; the threshold makes every decoded text count as a repetition loop.
    strict = Engine(engine.backend, engine.name, GuardOptions(compression_ratio_threshold=0.01))
    speech = speech_clips["beckett"]
    reason = no_text_reason(strict, speech, voiced(strict, speech))
    assert "dropped by the hallucination guard" in reason and "repetition" in reason


# -- the real app in a browser --------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BROWSER_KEYS = [EngineKey.of(MODEL, FP, 16), *(EngineKey.of(MODEL, "rtn", b) for b in (2, 4, 8))]
"""What the browser tests use: loaded up front so the browser waits only for decoding."""


@pytest.fixture(scope="module")
def app_url():
    from edgeasr.demo.app import build_app

    facts.warm_up(BROWSER_KEYS)
    app = build_app(MODEL)
    port = _free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def browser(app_url, speech_clips, tmp_path_factory):
    """Chromium whose microphone plays real speech (6 s of two_cities, looped): recordings are real audio."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian chromium is not installed")
    microphone = tmp_path_factory.mktemp("microphone") / "speech.wav"
    write_wav(microphone, speech_clips["two_cities_0"][:6 * SAMPLE_RATE])
    sync_api.expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={microphone}"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    """A fresh page (a new browser session of the app, microphone allowed) for each flow."""
    context = browser.new_context(viewport={"width": 1400, "height": 1300}, permissions=["microphone"])
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(app_url)
    yield page
    context.close()


@pytest.fixture
def own_clip(speech_clips, tmp_path) -> Path:
    """A clip the demo has never seen: 6 s of two_cities, written as a user's WAV upload."""
    path = tmp_path / "my_recording.wav"
    write_wav(path, speech_clips["two_cities_0"][:6 * SAMPLE_RATE])
    return path


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    if os.environ.get("EDGEASR_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(ARTIFACTS / name, SCREENSHOTS / name)


def _upload(page, audio: str, path: Path) -> None:
    """Replace the player's audio with a file, as a user does: clear it (×), then drop the file in."""
    clear = page.locator(f"{audio} button[aria-label=Clear]")
    page.wait_for_selector(f"{audio} button[aria-label=Clear], {audio} input[type=file]", state="attached")
    if clear.count():
        clear.click()
    page.locator(f"{audio} input[type=file]").set_input_files(str(path))


def _choose(page, dropdown: str, option: str) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def _pick_bits(page, radio: str, bits: int) -> None:
    page.locator(f"{radio} label").filter(has_text=re.compile(rf"^\s*{bits}\s*$")).click()


def _row(table_text: str, title: str) -> str:
    return next(line for line in table_text.splitlines() if line.startswith(title))


def _compare(page, b_label: str) -> tuple[str, str, str]:
    from playwright.sync_api import expect

    page.locator("#ab-run").click()
    expect(page.locator("#ab-status")).to_contain_text("Done.")
    table_ = page.locator("#ab-table")
    expect(table_).to_contain_text(b_label)
    return (page.locator("#ab-text-a textarea").input_value(), page.locator("#ab-text-b textarea").input_value(),
            table_.inner_text())


def test_upload_clears_reference_and_sample_reloads(page, own_clip):
    from playwright.sync_api import expect

    reference = page.locator("#ab-reference textarea")
    expect(reference).to_have_value(re.compile("Ever tried"))
    _upload(page, "#ab-audio", own_clip)
    expect(reference).to_have_value("")
    expect(page.locator("#ab-notice")).to_contain_text("reference text was cleared")
    expect(page.locator("#ab-sample input")).to_have_value("(your own recording or upload)")
    text_a, _, table_ = _compare(page, "RTN W4A16")
    assert "best of times" in _words(text_a)
    assert not any(line.startswith("WER") for line in table_.splitlines()), "no WER against another clip's text"
    _choose(page, "#ab-sample", "beckett")
    expect(reference).to_have_value(re.compile("Ever tried"))
    # Picking the same sample again reloads it (the value does not change, the reference does).
    reference.fill("my own edit")
    _choose(page, "#ab-sample", "beckett")
    expect(reference).to_have_value(re.compile("Ever tried"))


def test_recording_clears_reference(page):
    """A microphone recording (Chromium's fake device plays real speech) is new audio too."""
    from playwright.sync_api import expect

    reference = page.locator("#ab-reference textarea")
    expect(reference).to_have_value(re.compile("Ever tried"))
    page.locator("#ab-audio button[aria-label=Clear]").click()
    page.locator("#ab-audio button[aria-label='Record audio']").click()
    page.locator("#ab-audio button", has_text=re.compile(r"^\s*Record\s*$")).click()
    page.wait_for_timeout(4000)  # record about 4 s of the fake microphone's speech
    page.locator("#ab-audio button", has_text=re.compile(r"^\s*Stop\s*$")).first.click()
    expect(reference).to_have_value("")
    expect(page.locator("#ab-notice")).to_contain_text("reference text was cleared")
    text_a, _, _ = _compare(page, "RTN W4A16")
    assert "it was the" in _words(text_a)


def test_not_audio_gets_one_message_then_comparison_works(page, tmp_path):
    from playwright.sync_api import expect

    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("these are meeting notes, not audio\n" * 20)
    _upload(page, "#ab-audio", not_audio)
    expect(page.locator("#ab-notice")).to_contain_text("could not be used as audio")
    body = page.locator("body").inner_text()
    assert body.count("could not be used as audio") == 1, "one message, no toast or dump next to it"
    for leak in ("ffmpeg", "Traceback", "Error:", str(tmp_path), tempfile.gettempdir()):
        assert leak not in body, leak
    _choose(page, "#ab-sample", "beckett")
    text_a, text_b, table_ = _compare(page, "RTN W4A16")
    assert "ever tried" in _words(text_a) and "ever tried" in _words(text_b)
    assert "%" in _row(table_, "WER")


def test_w2_readouts_present_on_speech(page):
    from playwright.sync_api import expect

    expect(page.locator("#ab-reference textarea")).to_have_value(re.compile("Ever tried"))
    _pick_bits(page, "#bits-b", 2)
    text_a, text_b, table_ = _compare(page, "RTN W2A16")
    assert "ever tried" in _words(text_a)
    assert _words(text_a) != _words(text_b), "FP and W2 should not transcribe alike"
    assert not text_b.startswith("(no speech detected"), "the VAD found speech: W2's failure is the model's"
    for title in ("Engine that ran", "Resident memory", "Weight memory", "Effective bits", "Model size"):
        row = _row(table_, title)
        assert row.count("n/a") == 0, row
    assert re.search(r"(bundle|torch)", _row(table_, "Engine that ran"))
    wer = _row(table_, "WER")
    assert wer.count("%") == 2 and "+" in wer, wer  # W2 is worse than FP
    expect(page.locator("#ab-table")).to_contain_text("Baseline: FP = FP16")
    _shot(page, "ab_fp_vs_w2.png")

    _pick_bits(page, "#bits-b", 8)
    _, text_b8, table8 = _compare(page, "RTN W8A16")
    assert "ever tried" in _words(text_b8)
    for title in ("Weight memory", "BOPs"):
        assert _row(table_, title) != _row(table8, title), title
    _shot(page, "ab_fp_vs_w8.png")

    # Before a slow recipe runs, the tab says how long its first use takes (from the study's records).
    _choose(page, "#ab-b-method", "awq")
    expect(page.locator("#ab-note-b")).to_contain_text(re.compile(r"AWQ W8A16: its first use quantizes it, about \d+"))


def test_live_streams_an_upload_and_switch_resets_readouts(page, own_clip):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Live").click()
    _upload(page, "#live-clip", own_clip)
    page.locator("#live-play").click()
    readouts = page.locator("#live-readouts")
    expect(page.locator("#live-transcript")).to_contain_text(re.compile("best of times", re.I))
    expect(readouts).to_contain_text(f"Readouts of {MODEL} · FP (last finished line)")
    expect(readouts).to_contain_text(re.compile(r"\d+ ms"))
    expect(page.locator("#live-status")).to_contain_text("engine")
    expect(page.locator("#live-lag")).to_contain_text("real time")
    _shot(page, "live_upload.png")

    _choose(page, "#live-method", "rtn")
    _pick_bits(page, "#live-bits", 8)
    expect(readouts).to_contain_text(f"Readouts of {MODEL} · RTN W8A16 (no line finished yet)")
    expect(readouts).not_to_contain_text(re.compile(r"\d+ ms"))
    expect(page.locator("#live-status")).to_contain_text(re.compile(r"RTN W8A16.*engine"))
    _shot(page, "live_switched.png")


def test_study_page_is_short_with_plots(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Study").click()
    expect(page.locator("#study-summary")).to_contain_text(re.compile(r"No sweep results yet|study cells"))
    if "study cells" in page.locator("#study-summary").inner_text():
        expect(page.locator("#study-plot img")).to_be_visible()
        expect(page.locator("#study-table")).to_contain_text("FP16")
    height = page.evaluate("document.documentElement.scrollHeight")
    _shot(page, "study.png")
    assert height < STUDY_MAX_HEIGHT_PX, height
