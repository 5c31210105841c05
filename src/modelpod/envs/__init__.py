"""Per-package Python environments: requirements locked at pack time, environments built with uv,
content-addressed under the modelpod home, used by isolated workers. See ``docs/environments.md``."""
