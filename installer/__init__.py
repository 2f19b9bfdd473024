"""airlock's node half: the bundle format, trust, verification and (later) the installer."""

__version__ = "0.1.0"
