"""Recipes shipped with edgeasr (package data `edgeasr.recipes`): `edgeasr quantize --recipe NAME`."""
