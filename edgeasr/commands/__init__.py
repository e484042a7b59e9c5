"""Subcommands of the `edgeasr` CLI, one module each (discovered automatically)."""
