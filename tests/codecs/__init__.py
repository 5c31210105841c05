"""Tests of ``modelpod.codecs``."""
