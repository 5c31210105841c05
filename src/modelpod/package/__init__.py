"""The package format: layout, manifest, archives and test vectors (nothing here runs a model)."""

from modelpod.package.manifest import Manifest, read_manifest

__all__ = ["Manifest", "read_manifest"]
