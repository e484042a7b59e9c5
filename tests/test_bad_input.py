"""Bad files and no-speech audio at every entry point (issue 21 #3-#5): one clear line naming the file and
the real reason, no traceback, non-zero exit; steady noise and tones give no words; valid JSON only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from bad_audio import BAD_FILES
from edgeasr.audio import energy_spread_db, prepare_audio
from edgeasr.bench.noise_guard import noises
from edgeasr.engine import GuardOptions
from edgeasr.errors import AudioError
from edgeasr.protocol import ProtocolError, StreamConfig, dumps
from listen_support import listen_command


def _edgeasr() -> list[str]:
    script = shutil.which("edgeasr")
    return [script] if script else [sys.executable, "-m", "edgeasr.cli"]


def _no_constant(name: str):
    raise AssertionError(f"{name} is not JSON")


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_loader_names_the_file_and_the_real_reason(kind, tmp_path):
    data, reason = BAD_FILES[kind]
    path = tmp_path / f"{kind}.wav"
    path.write_bytes(data)
    with pytest.raises(AudioError) as info:
        prepare_audio(path)
    assert str(info.value).startswith(f"{path}: ") and reason in str(info.value)


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.parametrize("tool", ["transcribe", "listen"])
def test_cli_one_line_and_non_zero_exit(kind, tool, tmp_path):
    """`edgeasr transcribe` and `edgeasr-listen --file` read the file before any model: one line, exit 2."""
    data, reason = BAD_FILES[kind]
    (tmp_path / "clip.wav").write_bytes(data)
    command = _edgeasr() + ["transcribe", "clip.wav"] if tool == "transcribe" else listen_command() + ["--file", "clip.wav"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and result.stdout == "", result
    assert len(lines) == 1 and "clip.wav: " in lines[0] and reason in lines[0], result.stderr
    assert "Traceback" not in result.stderr and str(tmp_path) not in result.stderr
    assert "site-packages" not in result.stderr and sys.prefix not in result.stderr


def test_no_infinity_in_json():
    text = dumps({"rtfx": float("inf"), "x": [float("nan"), 1.5], "nested": {"y": float("-inf")}})
    assert json.loads(text, parse_constant=_no_constant) == {"rtfx": None, "x": [None, 1.5], "nested": {"y": None}}


def test_config_types_are_strict_and_json_is_bounded():
    for bad in ['{"sample_rate": 16000, "partials": "false"}', '{"sample_rate": 16000, "partials": 0}',
                '{"sample_rate": 16000, "recipe": {"model": "moonshine-tiny", "method": "rtn", "w_bits": "8"}}',
                '{"sample_rate": 16000, "recipe": {"model": "moonshine-tiny", "method": "rtn", "w_bits": true}}',
                '{"sample_rate": 16000.0}', '{"sample_rate": 16000, "max_queue_seconds": Infinity}',
                "[" * 200_000, "[" * 64 + "]" * 64, '{"sample_rate": 16000, "overflow": "wait"}']:
        with pytest.raises(ProtocolError) as info:
            StreamConfig.parse(bad)
        assert info.value.close_code == 4400 and info.value.message
    config = StreamConfig(16000, partials=False, overflow="block", max_queue_seconds=0.5)
    assert StreamConfig.parse(config.message()) == config


def test_steady_noise_and_tones_measure_under_the_guard():
    threshold = GuardOptions().min_energy_spread_db
    assert all(energy_spread_db(audio) < threshold for audio in noises().values())


def test_speech_keeps_its_dynamics(speech_clips):
    """Real speech, whole clips and the growing windows a streaming line decodes, stays far above the guard."""
    threshold = GuardOptions().min_energy_spread_db
    for clip in speech_clips.values():
        windows = [clip] + [clip[:n] for n in range(9600, clip.size, 8000)]  # 0.6 s, 1.1 s, ...
        assert min(energy_spread_db(w) for w in windows) > 2 * threshold


def test_noise_and_tones_give_no_words():
    """60 s of pink noise at -30 dBFS gave "You You You You" on moonshine-tiny before the guard."""
    from edgeasr.engine import Engine

    engine = Engine.load("moonshine-tiny")
    for name, audio in noises().items():
        transcript = engine.transcribe(audio)
        assert transcript.text == "", (name, transcript.text)
        assert all(s.dropped for s in transcript.segments), name
        assert json.loads(dumps(transcript.to_dict()), parse_constant=_no_constant)["rtfx"] is None

