"""Personalisation: a folder of the user's own unlabelled recordings as calibration (`--calib-dir`), and the
per-voice report of `edgeasr bench personal`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soxr

from edgeasr.audio import SAMPLE_RATE, write_wav
from edgeasr.cli import main
from edgeasr.data.manifest import load_manifest
from edgeasr.errors import DatasetError
from edgeasr.quant.user_audio import PIECE_SECONDS, read_user_audio

from audio_support import write_pcm16


@pytest.fixture
def my_voice(tmp_path, speech_clips):
    """A user's folder: a 44.1 kHz stereo phone recording, an 8 kHz mono one, and a 44 s one that must be cut."""
    folder = tmp_path / "my-voice"
    (folder / "phone").mkdir(parents=True)
    at_44k = soxr.resample(speech_clips["beckett"], SAMPLE_RATE, 44100)
    write_pcm16(folder / "phone" / "stereo-44k.wav", np.stack([at_44k, 0.5 * at_44k], axis=1), 44100)
    write_pcm16(folder / "mono-8k.wav", soxr.resample(speech_clips["two_cities_1"], SAMPLE_RATE, 8000), 8000)
    whole = np.concatenate([c for k, c in sorted(speech_clips.items()) if k.startswith("two_cities")])
    write_wav(folder / "long.wav", whole)
    return folder


def test_calib_dir_reads_stereo_44k_and_cuts_long_recordings(my_voice, tmp_path, monkeypatch):
    from edgeasr.quant.calibrate import load_calibration_clips
    from edgeasr.quant.recipe import CalibrationOptions

    monkeypatch.setenv("EDGEASR_CACHE", str(tmp_path / "cache"))

    user = read_user_audio(my_voice)
    by_name = {r.name: r for r in user.recordings}
    assert set(by_name) == {"phone/stereo-44k.wav", "mono-8k.wav", "long.wav"}
    assert (by_name["phone/stereo-44k.wav"].sample_rate, by_name["phone/stereo-44k.wav"].channels) == (44100, 2)
    assert by_name["mono-8k.wav"].sample_rate == 8000
    assert by_name["long.wav"].seconds > 2 * PIECE_SECONDS and by_name["long.wav"].pieces == 3
    assert all(r.speech_seconds > 0.5 * r.seconds for r in user.recordings)
    pieces = load_manifest(user.manifest)
    assert len(pieces) == user.pieces == 5
    assert all(p.text is None and p.seconds <= PIECE_SECONDS for p in pieces)
    assert sum(p.seconds for p in pieces) == pytest.approx(user.seconds, abs=0.05)
    clips = load_calibration_clips(CalibrationOptions(str(user.manifest), n_clips=10))
    assert len(clips) == 5 and all(c.text is None and c.audio.dtype == np.float32 for c in clips)
    assert sum(c.audio.size for c in clips) / SAMPLE_RATE == pytest.approx(user.seconds + 5 * 0.3, abs=0.1)
    assert read_user_audio(my_voice).manifest == user.manifest  # read once, then found in the cache


@pytest.mark.slow
def test_quantize_calib_dir_gptq_on_stereo_44k(my_voice, tmp_path, speech_clips):
    """`edgeasr quantize --calib-dir` end to end: GPTQ calibrated on the folder's pieces, and the model still hears."""
    from edgeasr.engine import Engine

    out = tmp_path / "ckpt"
    code = main(["quantize", "--model", "moonshine-tiny", "--method", "gptq", "--w-bits", "4", "--calib-dir",
                 str(my_voice), "--calib-clips", "3", "--out", str(out)])
    assert code == 0
    meta = json.loads((out / "quant.json").read_text())
    assert meta["recipe"]["calibration"]["dataset"] == str(read_user_audio(my_voice).manifest)
    assert meta["stats"]["calibration_clips"] == 3
    assert "ever tried" in Engine.load(out).transcribe(speech_clips["beckett"]).text.lower()


def test_folder_without_usable_audio_is_one_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEASR_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "quiet"
    folder.mkdir()
    write_wav(folder / "silence.wav", np.zeros(3 * SAMPLE_RATE, np.float32))
    write_pcm16(folder / "hiss.wav", np.random.default_rng(0).normal(0, 1e-4, (2 * 44100, 2)), 44100)
    (folder / "notes.txt").write_text("what I said")
    with pytest.raises(DatasetError, match=r"no speech found \(0\.\d s detected in 2 recordings"):
        read_user_audio(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    for path, reason in ((folder, "no speech found"), (empty, "no recordings")):
        code = main(["quantize", "--model", "moonshine-tiny", "--method", "gptq", "--calib-dir", str(path)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and reason in err[0] and err[0].startswith("edgeasr: error: --calib-dir")


def _row(arm: str, voice: str, errors: dict[str, int], words: int = 20) -> dict:
    return {"model": "moonshine-tiny", "method": "gptq", "w_bits": 3, "arm": arm, "voice": voice,
            "wer": round(100 * sum(errors.values()) / words, 3), "errors": sum(errors.values()),
            "reference_words": words, "utterances": len(errors), "utterance_errors": errors,
            "load_avg_at_start": [3.0, 3.0, 3.0]}


def test_report_gives_the_difference_per_voice_both_ways():
    from edgeasr.bench.personal import markdown, paired, voice_of

    assert voice_of("festival-slt-h01-10") == "festival-slt"
    rows = [_row("generic", "flite-rms", {"a": 2, "b": 1}), _row("own", "flite-rms", {"a": 0, "b": 1}),
            _row("tts-mix", "flite-rms", {"a": 1, "b": 1}),
            _row("generic", "flite-awb", {"c": 0, "d": 0}), _row("own", "flite-awb", {"c": 1, "d": 2}),
            _row("tts-mix", "flite-awb", {"c": 0, "d": 1})]
    assert paired(rows[1], rows[0]) == (1, 0) and paired(rows[4], rows[3]) == (0, 2)
    table = markdown(rows, "edgeasr bench personal")
    lines = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "| 15.00 | 10.00 | 5.00 | -10.00 | 1 / 0 | -5.00 | 1 / 0 |" in lines["flite-rms"]
    assert "| 0.00 | 5.00 | 15.00 | +15.00 | 0 / 2 | +10.00 | 0 / 2 |" in lines["flite-awb"]
    assert "| 7.50 | 7.50 | 10.00 | +2.50 | | +2.50 | |" in lines["**all**"]
    assert json.dumps(rows)  # rows are plain JSON, as written to personal.jsonl
