"""Long audio is cut in its pauses, and no piece (the first one included) opens with most of a long pause."""

from __future__ import annotations

import numpy as np

from edgeasr.audio import SAMPLE_RATE, split_on_silence


def _speech_with_pause(pause_seconds: float, noise_floor: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    talk = lambda s: (0.3 * rng.standard_normal(int(s * SAMPLE_RATE))).astype(np.float32)  # noqa: E731
    pause = (noise_floor * rng.standard_normal(int(pause_seconds * SAMPLE_RATE))).astype(np.float32)
    return np.concatenate([talk(15.0), pause, talk(6.0)])


def test_short_audio_is_one_piece() -> None:
    audio = np.zeros(5 * SAMPLE_RATE, dtype=np.float32)
    assert split_on_silence(audio, 20.0) == [(0, audio.size)]


def test_a_long_opening_pause_is_cut_to_half_a_second_and_a_short_one_kept() -> None:
    rng = np.random.default_rng(2)
    talk = (0.3 * rng.standard_normal(4 * SAMPLE_RATE)).astype(np.float32)
    for floor in (0.0, 1e-4):  # digital silence, and a quiet room
        for pause, start in ((2.0, 1.5), (0.4, 0.0)):
            opening = (floor * rng.standard_normal(int(pause * SAMPLE_RATE))).astype(np.float32)
            audio = np.concatenate([opening, talk])
            [(first, end)] = split_on_silence(audio, 20.0)
            assert end == audio.size and 0 <= start * SAMPLE_RATE - first < 480, (floor, pause, first)  # 30 ms frames
    long_audio = np.concatenate([np.zeros(3 * SAMPLE_RATE, np.float32), _speech_with_pause(1.0)])
    pieces = split_on_silence(long_audio, 20.0)
    assert 0 <= 2.5 * SAMPLE_RATE - pieces[0][0] < 480 and pieces[-1][1] == long_audio.size


def test_a_cut_in_a_long_pause_keeps_at_most_a_fifth_of_a_second_of_it() -> None:
    for floor in (0.0, 1e-4):  # digital silence, and a quiet room
        audio = _speech_with_pause(1.0, floor)
        (a0, a1), (b0, b1) = split_on_silence(audio, 20.0)
        assert a0 == 0 and b1 == audio.size
        assert 15.0 * SAMPLE_RATE <= a1 <= 16.0 * SAMPLE_RATE  # cut inside the pause
        speech_resumes = 16 * SAMPLE_RATE
        assert b0 <= speech_resumes  # no speech is skipped
        assert speech_resumes - b0 <= 0.2 * SAMPLE_RATE + 480, (floor, (speech_resumes - b0) / SAMPLE_RATE)
        assert b0 >= a1


def test_steady_noise_has_no_pause_to_drop() -> None:
    rng = np.random.default_rng(1)
    audio = (0.2 * rng.standard_normal(70 * SAMPLE_RATE)).astype(np.float32)
    pieces = split_on_silence(audio, 20.0)
    assert len(pieces) == 4 and pieces[0][0] == 0 and pieces[-1][1] == audio.size
    assert all(end - start <= 20 * SAMPLE_RATE for start, end in pieces)
    assert all(prev_end == start for (_, prev_end), (start, _) in zip(pieces, pieces[1:]))  # nothing skipped
