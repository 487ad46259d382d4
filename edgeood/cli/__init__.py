"""The `edgeood` command line: parsing and printing only (edgeood.cli.app)."""
from edgeood.cli.app import app, main  # noqa: F401
