"""modelpod's test suite; its folders mirror ``src/modelpod``."""
