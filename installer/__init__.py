"""airlock's node installer: the phases of init, join and upgrade, the node's registry, and the one-file pyz's entry point (the format is `bundle`)."""

__version__ = "0.1.0"
