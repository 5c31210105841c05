"""Tests of ``modelpod.serving.http``."""
