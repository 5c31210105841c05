"""What the v2 REST and gRPC handlers share beyond inference: model lookups worded as Triton words
them, statistics, configuration and the model repository (index, load, unload).

Error wording: clients of Triton match on the start of its messages, so an unknown model's error
starts ``Request for unknown model: '<m>' is not found`` and an unreadable version
``failed to get model version from specified version string '<v>'``; modelpod's own detail (which
models are served, which versions there are) follows. A failed load starts ``failed to load '<m>'``.

Authorization is the caller's (each transport reads its token from its own place): these
functions take ``may_use(model) -> bool`` and the ``authorization`` value the caller sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelpod.errors import ServeError, clip
from modelpod.serving.auth import check_token
from modelpod.serving.context import ServerContext
from modelpod.serving.execution.served import ServedModel
from modelpod.serving.models.repository import Repository
from modelpod.serving.protocols.v2_config import ConfigOverride, ModelFacts, model_config

MayUse = Callable[[str], bool]


# -- lookups -----------------------------------------------------------------------------------------
def v2_error(repository: Repository, name: str, version: str | int | None, err: ServeError) -> ServeError:
    """``err`` from :meth:`Repository.get` in Triton's wording (modelpod's detail after it)."""
    if err.kind == "not_found":
        entry = repository.models.get(name)
        if entry is None:
            return ServeError("not_found", f"Request for unknown model: '{clip(name)}' is not found; it is not "
                                           f"served here (models: {repository.listing()})")
        return ServeError("not_found", f"Request for unknown model: '{clip(name)}' version {clip(str(version))} "
                                       f"is not found (versions: {repository.known_versions(name)})")
    if err.kind == "bad_input" and name in repository.models:
        return ServeError("bad_input", f"failed to get model version from specified version string "
                                       f"'{clip(str(version))}' (version should be an integral value > 0; "
                                       f"model '{clip(name)}' has versions {repository.known_versions(name)})")
    return err


def lookup(repository: Repository, name: str, version: str | None, *, require_ready: bool = True) -> ServedModel:
    """:meth:`Repository.get` with its errors in Triton's wording."""
    try:
        return repository.get(name, version, require_ready=require_ready)
    except ServeError as err:
        raise v2_error(repository, name, version, err) from None


# -- configuration and statistics --------------------------------------------------------------------
def config_of(served: ServedModel) -> dict[str, Any]:
    """A served version's Triton model configuration (JSON)."""
    return model_config(ModelFacts.of_model(served.name, served.model), served.settings)


def statistics(ctx: ServerContext, name: str, version: str | None, may_use: MayUse) -> list[dict[str, Any]]:
    """``model_stats`` for every version of every model the caller may use (no name), every version
    of one model, or one version (the caller checked the model's token for a named model)."""
    repository = ctx.repository
    if not name:
        versions = [s for s in repository.all() if may_use(s.name)]
    elif version:
        versions = [lookup(repository, name, version, require_ready=False)]
    else:
        entry = repository.models.get(name)
        if entry is None:
            lookup(repository, name, None)  # raises the unknown-model error
            return []
        versions = list(entry.versions.values())
    versions.sort(key=lambda s: (s.name, s.version))
    return [s.stats.as_triton(s.name, s.version_label) for s in versions]


# -- the model repository ----------------------------------------------------------------------------
def _manager(ctx: ServerContext) -> Any:
    if ctx.manager is None:
        raise ServeError("not_found", "this server has no model repository to manage")
    return ctx.manager


def _check_repository_name(repository_name: str) -> None:
    if repository_name:
        raise ServeError("bad_input", f"no repository named {clip(repr(repository_name))}: modelpod serves one "
                                      "repository (leave repository_name empty)")


def repository_index(ctx: ServerContext, given: str | None, may_use: MayUse, ready_only: bool = False,
                     repository_name: str = "") -> list[dict[str, str]]:
    """The index rows the caller may see (the server token, when set, first)."""
    manager = _manager(ctx)
    if ctx.token:
        check_token(ctx.token, given)
    _check_repository_name(repository_name)
    return [row for row in manager.index() if may_use(row["name"]) and (not ready_only or row["state"] == "READY")]


def control(ctx: ServerContext, name: str, action: str, given: str | None) -> Any:
    """The ModelManager, once the caller may ``action`` ("load" / "unload") ``name``: the server
    token when one is set, else the model's own; then ``--model-control`` (403 without it). Call it
    before reading the request's parameters."""
    manager = _manager(ctx)
    check_token(ctx.token or ctx.token_for(name) or manager.configured_token(name), given)
    if not ctx.model_control:
        raise ServeError("forbidden", f"model {action} is turned off on this server; start it with "
                         "--model-control to load and unload models through the API")
    return manager


async def repository_load(manager: Any, name: str, parameters: dict[str, Any], repository_name: str = "") -> None:
    """Load (or reload) every version of ``name`` the served PATH holds, with an optional Triton
    ``config`` override (see :mod:`modelpod.serving.protocols.v2_config`); ``manager`` is what
    :func:`control` gave."""
    _check_repository_name(repository_name)
    files = sorted(k for k in parameters if k.startswith("file:"))
    if files:  # Triton's status and words for files it cannot place (its model_control examples check them)
        raise ServeError("model_failed", f"failed to load '{clip(name)}': failed to poll from model repository: "
                                         f"model files in the load request ({clip(', '.join(files))}) are not "
                                         "supported; put the package in the served repository and load it by name")
    unknown = sorted(k for k in parameters if k != "config")
    if unknown:
        raise ServeError("bad_input", f"failed to load '{clip(name)}': unknown load parameter(s) "
                                      f"{clip(', '.join(unknown))} (modelpod takes 'config')")
    override = ConfigOverride(name, parameters["config"]) if "config" in parameters else None

    def changes(entry: Any) -> Any:  # off the event loop: reads the package's manifest
        assert override is not None
        try:
            facts = ModelFacts.of_package(name, entry.package)
        except Exception as exc:  # noqa: BLE001 - the reason goes back to the caller
            raise ValueError(f"its package cannot be read ({type(exc).__name__}: {exc})") from None
        return override.changes(facts, entry.settings)

    await manager.load(name, changes if override is not None else None)


async def repository_unload(manager: Any, name: str, parameters: dict[str, Any], repository_name: str = "") -> None:
    """Unload every version of ``name`` (``unload_dependents`` is accepted: modelpod has no ensembles)."""
    _check_repository_name(repository_name)
    unknown = sorted(k for k in parameters if k != "unload_dependents")
    if unknown:
        raise ServeError("bad_input", f"failed to unload '{clip(name)}': unknown unload parameter(s) "
                                      f"{clip(', '.join(unknown))} (modelpod takes 'unload_dependents')")
    await manager.unload(name)

