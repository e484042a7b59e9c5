"""The demo's "Tune for my voice" tab: its checks of the user's recording, and the real app driven by Chromium.

The browser flow uploads 35 s of real speech as a 44.1 kHz stereo phone recording, tunes moonshine-tiny with
RTN W4 on it (fast: RTN needs no calibration pass, so the bundle is only quantized and exported) and compares it
with the generic RTN W4 bundle on the beckett sample: both transcripts, WER and both bundle sizes appear.
"""

from __future__ import annotations

import re
import shutil
import socket
import tempfile
import wave

import numpy as np
import pytest
import soxr

from edgeasr.audio import SAMPLE_RATE, write_wav
from edgeasr.demo.inputs import ClipError
from edgeasr.demo.tabs.voice import MIN_SECONDS, MIN_SPEECH_SECONDS, check_voice

MODEL = "moonshine-tiny"
UI_TIMEOUT_MS = 480_000
"""Generous: a cold machine quantizes and exports the tuned bundle (and the generic one) before the first result."""


def _stereo_44k(path, speech: np.ndarray):
    audio = soxr.resample(speech, SAMPLE_RATE, 44100)
    data = (np.clip(np.stack([audio, 0.8 * audio], axis=1), -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(2)
        handle.setsampwidth(2)
        handle.setframerate(44100)
        handle.writeframes(data.tobytes())
    return path


@pytest.fixture
def my_voice(tmp_path, speech_clips):
    """35 s of a human voice, as a phone records it (44.1 kHz stereo)."""
    return _stereo_44k(tmp_path / "my voice.wav", np.concatenate([speech_clips["two_cities_0"],
                                                                  speech_clips["beckett"]]))


def test_recording_checks_say_what_is_wrong(tmp_path, monkeypatch, my_voice, speech_clips):
    monkeypatch.setenv("EDGEASR_CACHE", str(tmp_path / "cache"))
    short = tmp_path / "short.wav"
    write_wav(short, speech_clips["beckett"][: 5 * SAMPLE_RATE])
    silent = tmp_path / "silent.wav"
    write_wav(silent, np.zeros(int((MIN_SECONDS + 5) * SAMPLE_RATE), np.float32))
    not_audio = tmp_path / "voice.wav"
    not_audio.write_text("my voice memo, as text\n" * 10)
    for path, message in ((None, "No voice recording"), (short, f"record at least {MIN_SECONDS:.0f} s"),
                          (silent, f"Only 0.0 s of speech detected in {MIN_SECONDS + 5:.1f} s"),
                          (not_audio, "a text file, not audio")):
        with pytest.raises(ClipError, match=re.escape(message)) as caught:
            check_voice(None if path is None else str(path))
        assert str(tmp_path) not in str(caught.value)
    recording = check_voice(str(my_voice))
    assert "resampled from 44.1 kHz to 16 kHz" in recording.note and "2 channels mixed down" in recording.note
    assert recording.seconds == pytest.approx(34.6, abs=0.2) and recording.speech_seconds > MIN_SPEECH_SECONDS
    assert (recording.folder / "recording.wav").exists()


# -- the real app in Chromium ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    from edgeasr.demo.app import build_app

    app = build_app(MODEL)
    port = _free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture
def page(app_url):
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian chromium is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_context(viewport={"width": 1400, "height": 1300}).new_page()
        page.set_default_timeout(60_000)  # finding a control; only the tuning itself gets UI_TIMEOUT_MS
        page.goto(app_url)
        page.get_by_role("tab", name="Tune for my voice").click()
        yield page
        browser.close()


def _upload(page, audio: str, path) -> None:
    page.wait_for_selector(f"{audio} input[type=file]", state="attached")
    page.locator(f"{audio} input[type=file]").set_input_files(str(path))


def test_tune_for_my_voice_in_the_browser(page, my_voice, tmp_path, speech_clips):
    from playwright.sync_api import expect

    short = tmp_path / "hello.wav"
    write_wav(short, speech_clips["beckett"][: 4 * SAMPLE_RATE])
    _upload(page, "#voice-recording", short)
    expect(page.locator("#voice-notice")).to_contain_text(f"record at least {MIN_SECONDS:.0f} s")
    page.locator("#voice-run").click()  # refused with the same message, and the tab keeps working
    expect(page.locator("[data-testid=toast-body]").first).to_contain_text(f"record at least {MIN_SECONDS:.0f} s")
    page.locator("#voice-recording button[aria-label=Clear]").click()
    _upload(page, "#voice-recording", my_voice)
    expect(page.locator("#voice-notice")).to_contain_text("resampled from 44.1 kHz to 16 kHz")
    page.locator("#voice-method input").click()
    page.get_by_role("option", name="rtn", exact=True).click()
    expect(page.locator("#voice-reference textarea")).to_have_value(re.compile("^Ever tried"))
    page.locator("#voice-run").click()
    expect(page.locator("#voice-status")).to_contain_text("Done.", timeout=UI_TIMEOUT_MS)
    tuned = page.locator("#voice-text-tuned textarea").input_value().lower()
    generic = page.locator("#voice-text-generic textarea").input_value().lower()
    assert "ever tried" in tuned and "ever tried" in generic
    table = page.locator("#voice-table").inner_text()
    assert len(re.findall(r"\d+\.\d\d MB", table)) == 2, table
    assert len(re.findall(r"\d+\.\d %", table)) == 2, table
    assert "your recording (34.6 s" in table and "calib-mix" in table
    assert "RTN does not use calibration audio" in table
    body = page.locator("body").inner_text()
    for leak in ("Traceback", str(tmp_path), tempfile.gettempdir()):
        assert leak not in body, leak
