"""The modelpod version (single source for the package metadata and the manifest)."""

__version__ = "0.1.0"
