"""The addition model: ``out = x + y`` (the example from the Neuropod README).

``get_model(data_dir)`` is the entrypoint modelpod calls when it loads the package; it returns the
callable that receives the inputs as keyword arguments. ``helper`` is imported relatively, the way
packaged code imports its own modules.
"""

from .helper import add


def get_model(data_dir):
    def addition_model(x, y):
        return {"out": add(x, y)}

    return addition_model
