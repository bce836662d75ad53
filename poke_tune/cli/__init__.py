"""The `poke-tune` command line (the top layer; the only user of typer/rich)."""
