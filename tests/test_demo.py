"""The Gradio demo: its streaming handler on real chunked speech, and the real app driven by a browser.

The browser test starts the app on 127.0.0.1 (a free port, in this process) and drives Debian's
chromium through Playwright. Screenshots go to tests/artifacts/ (git-ignored); the committed copies
in docs/screenshots/ are refreshed from them when EDGEASR_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soxr

from edgeasr.audio import SAMPLE_RATE

from edgeasr.demo.engines import FP, EngineKey, get_engine
from edgeasr.demo.study import load_results
from edgeasr.demo.tabs import live

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
MODEL = "moonshine-tiny"
# Generous bounds: a cold CI machine quantizes and loads before the first comparison finishes.
UI_TIMEOUT_MS = 150_000


def _words(text: str) -> str:
    return re.sub(r"[^a-z ]", "", text.lower())


# -- streaming handler, called directly --------------------------------------------------------------

def test_live_handler_streams_chunked_speech(speech_clips):
    """Browser-like chunks (48 kHz int16, 0.5 s) of beckett → finals with readouts; sessions stay apart."""
    audio48 = soxr.resample(speech_clips["beckett"], SAMPLE_RATE, 48_000)
    pcm = (np.clip(audio48, -1, 1) * 32767).astype(np.int16)
    state = None
    for start in range(0, pcm.size, 24_000):
        state, transcript, readouts = live.live_chunk((48_000, pcm[start:start + 24_000]), state, MODEL, FP, 4)
    state, transcript, readouts = live.live_stop(state)
    assert "ever tried" in _words(state.text) and "better" in _words(state.text)
    assert state.finals and all(line.text in transcript for line in state.finals)
    assert re.search(r"Latency .*\| \d+ ms", readouts) and "BOPs" in readouts

    # A second browser session starts empty: per-session state, shared engine.
    other, other_text, _ = live.live_chunk((SAMPLE_RATE, np.zeros(8000, np.float32)), None, MODEL, FP, 4)
    assert other is not state and other.session is not state.session and not other.finals
    assert other.session.engine is state.session.engine
    assert other_text == live.EMPTY_TRANSCRIPT


def test_unsupported_recipe_is_a_ui_message():
    with pytest.raises(gr.Error, match="unknown method 'no-such-method'"):
        live.prepare(MODEL, "no-such-method", 4)


def test_study_results_loader(tmp_path):
    assert load_results(tmp_path / "missing").empty
    rows = [{"key": str(b), "recipe": {"model": MODEL, "method": "rtn", "w_bits": b}, "wer": {"wer": w},
             "cost": {"memory_io_bytes": 2e8 * b}} for b, w in ((8, 0.5), (4, 0.07), (2, 0.9), (8, 0.05))]
    (tmp_path / "sweep.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n{\"half-written", encoding="utf-8")
    results = load_results(tmp_path)
    # The re-run cell "8" replaces its first row; fractions become percent.
    assert list(results.table["w_bits"]) == [4, 2, 8] and list(results.table["wer_percent"]) == [7.0, 90.0, 5.0]
    assert list(results.table["memory_io_mb"]) == [800.0, 400.0, 1600.0]
    assert list(results.filtered([MODEL], ["gptq"]).index) == []
    assert results.choices("method") == ["rtn"]


# -- the real app in a browser --------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    from edgeasr.demo.app import build_app

    # Loaded (and quantized, once per cache) up front so the browser waits only for decoding.
    for key in (EngineKey.of(MODEL, FP, 16), EngineKey.of(MODEL, "rtn", 2), EngineKey.of(MODEL, "rtn", 8)):
        get_engine(key)
    app = build_app(MODEL)
    port = _free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def page(app_url):
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian chromium is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.set_default_timeout(UI_TIMEOUT_MS)
        sync_api.expect.set_options(timeout=UI_TIMEOUT_MS)
        page.goto(app_url)
        yield page
        browser.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    if os.environ.get("EDGEASR_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(ARTIFACTS / name, SCREENSHOTS / name)


def _pick_bits(page, bits: int) -> None:
    page.locator("#bits-b label").filter(has_text=re.compile(rf"^\s*{bits}\s*$")).click()


def _row(table_text: str, title: str) -> str:
    return next(line for line in table_text.splitlines() if line.startswith(title))


def _compare(page, b_label: str) -> tuple[str, str, str]:
    from playwright.sync_api import expect

    page.locator("#ab-run").click()
    table = page.locator("#ab-table")
    expect(table).to_contain_text(b_label)
    expect(page.locator("#ab-text-b textarea")).not_to_have_value(re.compile(r"^(…)?$"))
    expect(page.locator(".progress-text, .eta-bar")).to_have_count(0)
    return (page.locator("#ab-text-a textarea").input_value(), page.locator("#ab-text-b textarea").input_value(),
            table.inner_text())


def test_ab_comparison_in_browser(page):
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name=re.compile("what do you lose"))).to_be_visible()
    expect(page.locator("#ab-reference textarea")).to_have_value(re.compile("Ever tried"))
    _pick_bits(page, 2)
    text_a, text_b, table = _compare(page, "RTN W2A16")
    assert "ever tried" in _words(text_a)
    assert _words(text_a) != _words(text_b), "FP and W2 should not transcribe alike"
    wer = _row(table, "WER")
    assert wer.count("%") == 2 and "+" in wer, wer  # W2 is worse than FP
    expect(page.locator("#ab-diff-b")).to_contain_text("substituted")
    _shot(page, "ab_fp_vs_w2.png")

    _pick_bits(page, 8)
    text_a8, text_b8, table8 = _compare(page, "RTN W8A16")
    assert "ever tried" in _words(text_b8)
    for title in ("Weight memory", "Memory I/O", "BOPs"):
        assert _row(table, title) != _row(table8, title), title
    _shot(page, "ab_fp_vs_w8.png")


def test_live_and_study_tabs_in_browser(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Live").click()
    page.get_by_role("button", name="▶ Stream sample").click()
    expect(page.locator("#live-transcript")).to_contain_text(re.compile("better", re.I))
    expect(page.locator("#live-readouts")).to_contain_text(re.compile(r"\d+ ms"))
    _shot(page, "live_sample.png")

    page.get_by_role("tab", name="Study").click()
    expect(page.locator("#study-summary")).to_contain_text(re.compile(r"No sweep results yet|result rows"))
    _shot(page, "study.png")
