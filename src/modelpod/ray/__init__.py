"""modelpod on Ray Serve: the same packages, HTTP protocols and clients, on a Ray cluster.

    from ray import serve
    import modelpod.ray

    serve.run(modelpod.ray.app("models/", replicas=2))

or ``modelpod serve models/ --ray --replicas 2``. Models whose own settings ask for replicas or
resources get a deployment each, behind a router. See ``docs/scale-out.md``. Needs the ``ray``
extra (``pip install 'modelpod[ray]'``).
"""

from __future__ import annotations

from modelpod.ray.app import DeploymentOptions, app, deployment_options

__all__ = ["DeploymentOptions", "app", "deployment_options"]
