"""Tests of ``modelpod.runtime``."""
