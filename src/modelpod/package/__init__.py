"""Package format: manifest, archives, test vectors and the shared pack-and-verify flow."""

from modelpod.package.manifest import Manifest, PackageError, read_manifest
from modelpod.package.pack import pack, verify_package

__all__ = ["Manifest", "PackageError", "pack", "read_manifest", "verify_package"]
