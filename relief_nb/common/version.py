"""The package's version, kept at the bottom so that every layer can record it (run provenance)."""

__version__ = "0.2.0"
