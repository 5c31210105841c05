"""Our own copies of the wire protos and their generated modules (regenerate with gen.sh)."""
