"""Where things live inside a package folder (and beside it): the names every layer agrees on.

::

    <package>/
      modelpod.json          MANIFEST_NAME: the manifest (spec, platform, hashes of every file)
      code/  data/           CODE_DIR, DATA_DIR: python-platform code and its data
      model/...              the framework payload (each backend names its own file)
      service.py             SERVICE_FILE: optional pre/post-processing hooks (ModelService)
      test/inputs.npz        TEST_INPUTS: stored test inputs
      test/expected.npz      TEST_EXPECTED: and the outputs they must give
      requirements.lock      LOCK_FILE: the requirements, locked at pack time (its own environment)

    <repository>/<model>/serving.json   SETTINGS_FILE: that model's serving settings

A ModelArts model folder has no manifest: ``config.json`` (MODELARTS_CONFIG_FILE) and
``customize_service.py`` (MODELARTS_SERVICE_FILE) mark it.
"""

from __future__ import annotations

MANIFEST_NAME = "modelpod.json"
CODE_DIR = "code"
DATA_DIR = "data"
SERVICE_FILE = "service.py"
TEST_INPUTS = "test/inputs.npz"
TEST_EXPECTED = "test/expected.npz"
LOCK_FILE = "requirements.lock"
#: never packaged, never hashed
IGNORED_NAMES = frozenset({"__pycache__", ".DS_Store"})
SETTINGS_FILE = "serving.json"
MODELARTS_CONFIG_FILE = "config.json"
MODELARTS_SERVICE_FILE = "customize_service.py"
