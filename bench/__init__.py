"""nfebench harness: specs, grid runner, result store, metrics, tables, plots, CLI."""
