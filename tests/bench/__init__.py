"""Tests of ``modelpod.bench``."""
