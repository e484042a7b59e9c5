"""The study's committed results (package data `edgeasr.results`): what the demo's Study tab shows."""
