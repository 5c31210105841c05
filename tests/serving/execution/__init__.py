"""Tests of ``modelpod.serving.execution``."""
