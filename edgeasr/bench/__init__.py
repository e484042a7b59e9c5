"""Benchmarks: sweep grids (models × methods × bits × sets) on Ray, and the study's tables and plots."""
