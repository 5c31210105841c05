"""Shared fixtures (defined beside the server helpers in tests/helpers/servers.py)."""

from tests.helpers.servers import serve_factory  # noqa: F401 - the fixture
