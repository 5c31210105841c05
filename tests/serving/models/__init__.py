"""Tests of ``modelpod.serving.models``."""
