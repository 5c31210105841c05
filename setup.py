"""The optional C halves of the hot path (everything else is in pyproject.toml).

Each extension has a pure-Python twin that runs where it is not built (no C compiler): a build
failure here is reported and skipped, never fatal.
"""

import numpy
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("modelpod.codecs._fastjson", ["src/modelpod/codecs/_fastjson.c"],
                  include_dirs=[numpy.get_include()], optional=True),
        Extension("modelpod._fastspec", ["src/modelpod/_fastspec.c"], include_dirs=[numpy.get_include()],
                  optional=True),
        Extension("modelpod.serving.http._fastparse", ["src/modelpod/serving/http/_fastparse.c"], optional=True),
    ],
)
