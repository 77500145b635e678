"""The `tdwii` command line: the typer app, its option groups, one module per command."""
