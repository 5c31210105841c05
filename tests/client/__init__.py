"""Tests of ``modelpod.client``."""
