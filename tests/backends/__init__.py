"""Tests of ``modelpod.backends``."""
