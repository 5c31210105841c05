"""Tests of ``modelpod.serving.protocols``."""
