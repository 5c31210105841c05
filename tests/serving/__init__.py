"""Tests of ``modelpod.serving``."""
