"""The CLI's subcommands, one module each; ``cli.py`` only wires them."""
