"""Tests of ``modelpod.package``."""
