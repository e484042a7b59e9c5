"""Measurements: WER (leaderboard convention), cost (BOPs, memory I/O, size) and timing."""
