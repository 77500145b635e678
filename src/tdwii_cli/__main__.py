"""`python -m tdwii_cli`."""

from tdwii_cli.cli.app import app

if __name__ == "__main__":
    app(prog_name="tdwii")
