"""Helpers the test modules share: servers, packed models, CLI runs, framework models, strategies."""
