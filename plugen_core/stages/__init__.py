"""One module per DVC stage; each runs on its own: `python -m plugen_core.stages.<name> --help`."""
