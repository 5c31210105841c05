"""Wire codecs: bytes of one protocol <-> dicts of named numpy arrays. No HTTP, no models."""
