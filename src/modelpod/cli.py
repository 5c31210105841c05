"""The ``modelpod`` command line: pack | inspect | verify | infer | serve | bench | bench-report (docs/cli.md).

Each command is a thin shell over the Python API; heavy modules are imported inside the command.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from modelpod._version import __version__
from modelpod.errors import FrameworkMissingError, ModelpodError
from modelpod.spec import format_shape

app = typer.Typer(
    name="modelpod",
    help="Pack a model from any framework, run it through one infer() API, serve it to any client.",
    epilog="Exit status: 0 done, 1 the model, package or server refused or failed, 2 the command line is wrong "
           "(docs/cli.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help: flags show as flags (no <bool>), and help text is shown as written ([ray], [NAME=] stay)
    rich_markup_mode=None,
)
console = Console()
err_console = Console(stderr=True)


#: exit statuses of every command (documented in docs/cli.md and ``modelpod infer --help``)
EXIT_FAILED = 1  # the command ran and failed: the package, model or server refused or failed
EXIT_USAGE = 2  # the command line is wrong (as click's own usage errors): nothing was run


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _usage(message: str) -> NoReturn:
    """A command line that cannot be run as given (exit 2)."""
    _fail(message, EXIT_USAGE)


def _version(value: bool) -> None:
    if value:
        console.print(f"modelpod {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    """Pack a model from any framework, run it through one infer() API, serve it to any client."""


# ---------------------------------------------------------------------------------------------
# inputs and outputs on the command line


#: what ``--input`` takes, for its help and its errors
INPUT_FORMS = "NAME=<JSON> (x=[1,2,3], x=[[1,2],[3,4]], x=1.5), NAME=text (a string tensor), NAME=@file.npy, or @inputs.npz"
_LIST_LIKE = re.compile(r"^[-+\d.eE\s]+(,[-+\d.eE\s]+)+$")  # 1,2,3: a list without its brackets


def parse_input_args(values: list[str]) -> dict[str, Any]:
    """Turn ``name=@file.npy``, ``name=[1,2]``, ``@inputs.npz`` into a dict of tensors (a value that
    is neither JSON nor meant as text is a usage error naming the input)."""
    from modelpod.package.vectors import from_stored, load_npz

    def bad(message: str) -> typer.BadParameter:
        return typer.BadParameter(message, param_hint="'--input'")

    tensors: dict[str, Any] = {}
    for item in values:
        if item.startswith("@"):
            path = Path(item[1:])
            if path.suffix != ".npz":
                raise bad(f"{item}: a bare @file must be an .npz holding every input")
            try:
                tensors.update(load_npz(path))
            except (OSError, ValueError) as exc:
                raise bad(str(exc)) from None
            continue
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise bad(f"{item!r}: use {INPUT_FORMS}")
        if value.startswith("@"):
            path = Path(value[1:])
            try:
                tensors[name] = from_stored(np.load(path, allow_pickle=False))
            except (OSError, ValueError) as exc:
                raise bad(f"input '{name}': cannot read {path} as .npy ({exc})") from None
            continue
        try:
            tensors[name] = json.loads(value)
        except json.JSONDecodeError as exc:
            if value.lstrip()[:1] in ("[", "{", '"'):
                raise bad(f"input '{name}': {value!r} is malformed JSON ({exc.msg} at character {exc.pos}); "
                          f"give {INPUT_FORMS}") from None
            if _LIST_LIKE.match(value):
                raise bad(f"input '{name}': {value!r} is not JSON; a list needs brackets: {name}=[{value}]") from None
            tensors[name] = value  # a bare string for a string tensor
    return tensors


def _refuse_raw_model(path: Path, command: str) -> None:
    """A raw .onnx / .pt / .keras file or SavedModel folder where a package is wanted: say how to pack it."""
    from modelpod.packers.sources import pack_hint

    hint = pack_hint(path, command)
    if hint is not None:
        _fail(hint)


def _naming_model(exc: FrameworkMissingError, path: Path) -> FrameworkMissingError:
    """The missing-framework error naming the package's model (read from its manifest) when it can."""
    from modelpod.packers.sources import describe

    try:
        return exc.for_model(describe(path)["name"])
    except (ValueError, ImportError, OSError):
        return exc


def _print_outputs(outputs: dict[str, np.ndarray], output_dir: Path | None, as_json: bool) -> None:
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        for name, array in outputs.items():
            np.save(output_dir / f"{name}.npy", array, allow_pickle=array.dtype.kind == "O")
    if as_json:
        doc = {
            name: {"dtype": str(a.dtype), "shape": list(a.shape), "data": _jsonable(a)}
            for name, a in outputs.items()
        }
        console.print_json(json.dumps(doc))
        return
    with np.printoptions(threshold=50, edgeitems=3):
        for name, array in outputs.items():
            console.print(f"[bold]{escape(name)}[/] {array.dtype} {tuple(array.shape)}", highlight=False)
            console.print(repr(array), highlight=False, markup=False)
    if output_dir is not None:
        console.print(f"wrote {len(outputs)} .npy file(s) to {output_dir}")


def _jsonable(array: np.ndarray) -> Any:
    if array.dtype.kind == "O":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.ravel()]
    return array.astype(np.float64).tolist() if array.dtype.kind == "f" else array.tolist()


def _spec_table(title: str, specs: list[dict[str, Any]] | tuple[Any, ...]) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column("name")
    table.add_column("dtype")
    table.add_column("shape")
    for s in specs:
        s = s if isinstance(s, dict) else s.to_dict()
        table.add_row(escape(s["name"]), s["dtype"], escape(format_shape(s["shape"])))
    return table


# ---------------------------------------------------------------------------------------------
# commands


@app.command()
def pack(
    source: Annotated[Path, typer.Argument(help="A SavedModel folder, .onnx file, TorchScript .pt/.pth, or .keras/.h5 file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Package to write: a folder, or a .tar.gz/.zip archive.")],
    name: Annotated[Optional[str], typer.Option(help="Model name (default: the source file name).")] = None,
    signature: Annotated[Optional[str], typer.Option(help="SavedModel signature to make the default.")] = None,
    input_spec: Annotated[Optional[str], typer.Option(help="Input spec as JSON (needed for TorchScript).")] = None,
    output_spec: Annotated[Optional[str], typer.Option(help="Output spec as JSON (needed for TorchScript).")] = None,
    test_inputs: Annotated[Optional[Path], typer.Option(help=".npz of test inputs, run right after packing.")] = None,
    test_expected: Annotated[Optional[Path], typer.Option(help=".npz of the outputs the test inputs must give.")] = None,
    requirements: Annotated[Optional[list[str]], typer.Option(
        "--requirements", "-r", metavar="REQUIREMENT", help="A pip requirement of the model (repeatable; or a requirements.txt file): "
        "locked into the package, which then runs in an environment of its own.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")] = False,
) -> None:
    """Pack a model file or folder into a package, deriving the spec where the format knows it."""
    from modelpod.packers.sources import source_module

    kwargs: dict[str, Any] = {
        "name": name or source.name.split(".")[0],
        "signature": signature,
        "input_spec": _json_option("--input-spec", input_spec),
        "output_spec": _json_option("--output-spec", output_spec),
        "test_input_data": _npz_option("--test-inputs", test_inputs),
        "test_expected_out": _npz_option("--test-expected", test_expected),
        "requirements": _requirement_list(requirements or []),
        "overwrite": overwrite,
    }
    try:
        module = source_module(source)
        with console.status(f"packing {source} ({module.__name__.rsplit('.', 1)[-1]})..."):
            written = module.pack_source(source, output, **kwargs)
    except (ValueError, FileExistsError, ImportError, OSError) as exc:
        _fail(as_flags(str(exc)))
    console.print(f"[green]packed[/] {source} -> {written}")


#: the packers' argument names as the flags of modelpod pack, for their messages
_PACK_FLAGS = {"overwrite=True": "--overwrite", "signature=": "--signature NAME", "input_spec": "--input-spec",
               "output_spec": "--output-spec", "test_input_data": "--test-inputs", "test_expected_out": "--test-expected"}
_PACK_ARGUMENT = re.compile(r"(?<![\w-])(" + "|".join(re.escape(k) for k in _PACK_FLAGS) + r")(?!\w)")


def as_flags(message: str) -> str:
    """A packer's message (written for the Python API) with its argument names as modelpod pack's flags."""
    return _PACK_ARGUMENT.sub(lambda m: _PACK_FLAGS[m.group(1)], message)


def _json_option(flag: str, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        _usage(f"{flag}: malformed JSON ({exc.msg} at character {exc.pos}); give a list of tensor specs, e.g. "
               '\'[{"name": "x", "dtype": "float32", "shape": [null, 3]}]\'')


def _npz_option(flag: str, path: Path | None) -> dict[str, Any] | None:
    from modelpod.package.vectors import load_npz

    if path is None:
        return None
    try:
        return load_npz(path)
    except (OSError, ValueError) as exc:
        _usage(f"{flag} {path}: {exc}")


def _requirement_list(given: list[str]) -> list[str]:
    """``--requirements`` values: requirement strings, or requirements files (one per line, # comments)."""
    found: list[str] = []
    for item in given:
        path = Path(item)
        if item.endswith(".txt") and path.is_file():
            found += [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()
                      if line.split("#", 1)[0].strip()]
        else:
            found.append(item)
    return found


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="A package (folder or archive), or a raw SavedModel/.onnx/.keras.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Show a model's name, platform and every input and output with dtype and shape."""
    from modelpod.packers.sources import describe

    try:
        info = describe(path)
    except (ValueError, ImportError, OSError) as exc:
        _fail(str(exc))
    if as_json:
        console.print_json(json.dumps(info))
        return
    console.print(f"[bold]{escape(info['name'])}[/]  platform: {escape(info['platform'])}", highlight=False)
    for sig_name, sig in info["signatures"].items():
        label = f"signature '{sig_name}'" if sig_name else "default signature"
        console.print(f"\n{label}:")
        console.print(_spec_table("inputs", sig["inputs"]))
        console.print(_spec_table("outputs", sig["outputs"]))
    if info.get("files"):
        console.print(f"\n{len(info['files'])} payload file(s); test vectors: {info.get('test_vectors', False)}")
    if info.get("requirements"):
        console.print(f"requirements: {escape(', '.join(info['requirements']))}", highlight=False)
    lock = info.get("lock")
    if lock:
        target = f" for python {lock['python']} on {lock['platform']}" if "python" in lock else ""
        console.print(f"locked in {lock['file']}{target}", highlight=False)
        pins = lock.get("pins", {})
        if pins:
            console.print("  " + escape(", ".join(f"{k}=={v}" for k, v in sorted(pins.items()))), highlight=False)


@app.command()
def verify(path: Annotated[Path, typer.Argument(help="A package folder or archive.")]) -> None:
    """Re-run the package's stored test vectors; exit 1 and show the differences on mismatch."""
    from modelpod.packers.flow import verify_package
    from modelpod.runtime.model import resolve_package

    _refuse_raw_model(path, "verify")
    try:
        root, tmp = resolve_package(path)
        try:
            has_vectors = (root / "test" / "inputs.npz").is_file()
            verify_package(root)
        finally:
            if tmp is not None:
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
    except FrameworkMissingError as exc:
        _fail(str(_naming_model(exc, path)))
    except (ValueError, ImportError, OSError, RuntimeError) as exc:
        _fail(str(exc))
    if not has_vectors:
        console.print(f"[yellow]{escape(str(path))}: hashes match; the package has no test vectors to run[/]")
        return
    console.print(
        f"[green]ok[/] {escape(str(path))}: hashes match and the test vectors give the expected outputs"
    )


@app.command()
def infer(
    target: Annotated[str, typer.Argument(help="A package folder/archive, or a server URL (http://host:port, grpc://host:port).")],
    model: Annotated[Optional[str], typer.Argument(help="Model name (only with a server URL).")] = None,
    input: Annotated[list[str], typer.Option("--input", "-i", metavar="NAME=VALUE", help=f"{INPUT_FORMS} (repeatable).")] = [],  # noqa: B006
    output: Annotated[list[str], typer.Option("--output", metavar="NAME", help="Return only this output (repeatable).")] = [],  # noqa: B006
    output_dir: Annotated[Optional[Path], typer.Option(help="Also write each output as NAME.npy here.")] = None,
    signature: Annotated[Optional[str], typer.Option(help="Signature to run (models with several).")] = None,
    token: Annotated[Optional[str], typer.Option(envvar="MODELPOD_TOKEN", help="Token for a server that needs one.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print outputs as JSON.")] = False,
) -> None:
    """Run a model once: on a local package, or on a server through the client SDK.

    Exit status (the same for every modelpod command): 0 done; 1 the package, model or server
    refused or failed it (input off the model's spec, any error status from a server, an unknown
    model, no server there); 2 the command line is wrong (an unknown option, a missing argument, a
    malformed --input, an input file that cannot be read): nothing was run.
    """
    from modelpod.errors import ServerError
    from modelpod.spec import SpecError

    inputs = parse_input_args(input)
    outputs = output or None
    if "://" in target and not model:
        _usage("give the model name after the server URL: modelpod infer URL MODEL --input ...")
    if "://" not in target:
        _refuse_raw_model(Path(target), "infer")
    try:
        if "://" in target:
            from modelpod.client import connect

            with connect(target, token=token) as client:
                result = client.infer(model, inputs, outputs=outputs)
        else:
            from modelpod.runtime.model import load

            with load(target) as loaded:
                result = loaded.infer(inputs, outputs=outputs, signature=signature)
    except SpecError as exc:
        _fail(f"bad input: {exc}")
    except ServerError as exc:
        _fail(f"the server answered {exc}" if exc.status else str(exc))
    except FrameworkMissingError as exc:
        _fail(str(_naming_model(exc, Path(target))))
    except (ValueError, ImportError, OSError, RuntimeError) as exc:
        _fail(str(exc))
    _print_outputs(result, output_dir, as_json)


@app.command()
def serve(
    path: Annotated[Path, typer.Argument(help="A package, archive, repository folder (model/version/...), EAS-style service config .json, or ModelArts model folder.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="HTTP port: KServe v2 (/v2), TF Serving (/v1), PAI-EAS (/api/predict). 0 = any free port.")] = 8080,
    grpc_port: Annotated[int, typer.Option(help="KServe v2 gRPC port; -1 turns gRPC off. 0 = any free port.")] = 8081,
    token: Annotated[Optional[str], typer.Option(envvar="MODELPOD_TOKEN", help="Token every model requires (a service config may set one per model).")] = None,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body accepted, after decompression too; larger ones get 413 (gRPC: RESOURCE_EXHAUSTED).")] = 256.0,
    max_header_kb: Annotated[float, typer.Option(help="Largest request line plus headers; larger ones get 431 (414 for a URL alone).")] = 64.0,
    max_headers: Annotated[int, typer.Option(help="Most header lines in one request; more get 431.")] = 100,
    header_timeout: Annotated[float, typer.Option(help="Seconds a client may take to send a request's headers; then 408 and close.")] = 10.0,
    body_timeout: Annotated[float, typer.Option(help="Longest silence (s) while a request body arrives; then 408 and close.")] = 30.0,
    idle_timeout: Annotated[float, typer.Option(help="Seconds an HTTP or gRPC connection may stay open with nothing in progress.")] = 60.0,
    max_connections: Annotated[int, typer.Option(help="Open HTTP connections; past it the longest-idle one is closed, else 503.")] = 4096,
    max_form_fields: Annotated[int, typer.Option(help="Most parts in one multipart body (service hooks); more get 413.")] = 1000,
    max_grpc_calls: Annotated[int, typer.Option(help="gRPC calls in progress at once; more get RESOURCE_EXHAUSTED.")] = 256,
    eas_date_window: Annotated[float, typer.Option(help="Seconds an EAS signature's Date may be from the server's clock (UTC or local); 0 = unchecked.")] = 900.0,
    model_control: Annotated[bool, typer.Option("--model-control", help="Allow loading and unloading models through the v2 repository API (needs --token or the model's token when set).")] = False,
    shared_memory: Annotated[Optional[bool], typer.Option("--shared-memory/--no-shared-memory", show_default=False, help="Let clients on this host register POSIX shared memory regions for tensors (Triton's system shared memory extension; needs --token when set). Default: on when --host is a loopback address, else off.")] = None,
    max_shm_regions: Annotated[int, typer.Option(help="While shared memory is on: regions registered at once; more are refused (400).")] = 64,
    max_shm_mb: Annotated[float, typer.Option(help="While shared memory is on: MiB of all registered regions together; more are refused (400).")] = 1024.0,
    instances: Annotated[Optional[int], typer.Option(help="Instances per model (default 1; a service config's metadata.instance wins).")] = None,
    max_queue_size: Annotated[Optional[int], typer.Option(help="Requests allowed to wait per model before 503/450 (default 64).")] = None,
    timeout_ms: Annotated[Optional[float], typer.Option(help="Per-request deadline in ms (default 5000) before 504/408.")] = None,
    isolation: Annotated[Optional[str], typer.Option(help="Per-model environments and worker processes: auto (packages with requirements), on (every model), off (none; requirements ignored). A model's serving.json or service config wins.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Poll PATH and load new or replaced versions with zero-drop swaps.")] = False,
    watch_interval: Annotated[float, typer.Option(help="Seconds between --watch polls.")] = 2.0,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log one JSON line per request (logger modelpod.access).")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    ray: Annotated[bool, typer.Option("--ray", help="Run on Ray Serve: replicas of the whole server behind Ray's HTTP proxy on --host/--http-port and its gRPC proxy on --grpc-port (needs modelpod[ray]; see docs/scale-out.md).")] = False,
    ray_address: Annotated[Optional[str], typer.Option(help="With --ray: join this cluster (auto, ray://host:10001) instead of starting a local Ray.")] = None,
    replicas: Annotated[int, typer.Option(help="With --ray: replicas of each deployment (a model's own settings may give its own).")] = 1,
    autoscale: Annotated[Optional[str], typer.Option(help="With --ray: MIN:MAX replicas for Serve's autoscaler instead of --replicas.")] = None,
    replica_cpus: Annotated[Optional[float], typer.Option(help="With --ray: CPUs Ray reserves for each replica (ray_actor_options num_cpus).")] = None,
    replica_gpus: Annotated[Optional[float], typer.Option(help="With --ray: GPUs Ray reserves for each replica.")] = None,
    replica_memory_mb: Annotated[Optional[float], typer.Option(help="With --ray: memory (MB) Ray reserves for each replica.")] = None,
    ray_layout: Annotated[str, typer.Option(help="With --ray: repository (one deployment for every model), models (one per model, behind a router) or auto (per model when a model sets its own replicas or resources).")] = "auto",
    keep_freed_memory: Annotated[bool, typer.Option(help="Keep large freed buffers (glibc malloc tuning) so requests with big tensors do not pay for fresh pages each time; freed memory stays with the process (up to its peak use, at most 256 MiB free per malloc arena).")] = True,
) -> None:
    """Serve packages over KServe v2 REST + gRPC, TF Serving REST and PAI-EAS, all at once.

    Stops gracefully on SIGTERM/SIGINT: no new connections, in-flight requests finish, exit 0.
    """
    import logging

    from pydantic import ValidationError

    from modelpod.serving.limits import Limits
    from modelpod.serving.server import ServeOptions, is_loopback
    from modelpod.serving.server import serve as run_server
    from modelpod.serving.settings import ModelSettings, explain

    _refuse_raw_model(path, "serve")
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        _usage(f"--log-level must be debug, info, warning or error, not {log_level!r}")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    given = {"instances": instances, "max_queue_size": max_queue_size, "timeout_ms": timeout_ms,
             "isolation": isolation}
    try:
        defaults = ModelSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        names = {field.validation_alias: name for name, field in ModelSettings.model_fields.items()}
        _usage(f"--{names.get(err['loc'][0], err['loc'][0]).replace('_', '-')} {explain(err)}")
    try:
        limits = Limits(
            max_body_bytes=int(max_body_mb * (1 << 20)), max_header_bytes=int(max_header_kb * 1024),
            max_headers=max_headers, header_timeout_s=header_timeout, body_timeout_s=body_timeout,
            idle_timeout_s=idle_timeout, max_connections=max_connections, max_form_fields=max_form_fields,
            max_grpc_calls=max_grpc_calls, eas_date_window_s=eas_date_window,
            max_shm_regions=max_shm_regions, max_shm_bytes=int(max_shm_mb * (1 << 20)),
        )
    except ValueError as exc:
        _usage(str(exc))
    if ray and shared_memory:
        _usage("--shared-memory needs the plain server: Ray replicas may run on other hosts than their clients")
    if shared_memory is None:  # only clients on this host can use it: on where only they can connect
        shared_memory = not ray and is_loopback(host)
    if ray:
        _serve_on_ray(path, host, http_port, None if grpc_port < 0 else grpc_port, ray_address, replicas, autoscale, replica_cpus, replica_gpus,
                      replica_memory_mb, token, defaults, limits, model_control, watch_interval if watch else None,
                      ray_layout)
        return
    elif ray_address or autoscale or replicas != 1 or ray_layout != "auto":
        _usage("--ray-address, --replicas, --autoscale and --ray-layout need --ray")
    options = ServeOptions(
        host=host, http_port=http_port, grpc_port=None if grpc_port < 0 else grpc_port, token=token,
        limits=limits, model_control=model_control, shared_memory=shared_memory,
        model_defaults=defaults,
        access_log=access_log, watch_s=watch_interval if watch else None, keep_freed_memory=keep_freed_memory,
    )
    try:
        run_server(path, options)
    except (ModelpodError, ValueError, ImportError, OSError) as exc:  # a model that cannot load: one line
        _fail(str(exc))


def _serve_on_ray(path: Path, host: str, http_port: int, grpc_port: int | None, address: str | None, replicas: int, autoscale: str | None,
                  cpus: float | None, gpus: float | None, memory_mb: float | None, token: str | None,
                  defaults: Any, limits: Any, model_control: bool, watch_s: float | None, layout: str) -> None:
    from modelpod.ray.options import deployment_options
    from modelpod.ray.runner import serve_on_ray

    try:
        options = deployment_options(replicas, autoscale, cpus, gpus, memory_mb)
    except ValueError as exc:
        _usage(str(exc))
    try:
        serve_on_ray(path, host=host, http_port=http_port, grpc_port=grpc_port, address=address, options=options, token=token,
                     model_defaults=defaults, limits=limits, model_control=model_control, watch_s=watch_s,
                     layout=layout, ready=lambda line: (console.print(line, highlight=False, soft_wrap=True), sys.stdout.flush()))
    except (ValueError, ImportError, OSError, RuntimeError) as exc:
        _fail(str(exc))


@app.command()
def bench(
    url: Annotated[str, typer.Argument(help="Server URL: http://host:port (v2, TF Serving, EAS) or grpc://host:port.")],
    model: Annotated[str, typer.Argument(help="Model name.")],
    concurrency: Annotated[str, typer.Option(help="Comma-separated concurrency levels, run in turn.")] = "1,16,64",
    duration: Annotated[str, typer.Option(help="Time per level: 10s, 500ms, 1m.")] = "10s",
    protocol: Annotated[Optional[str], typer.Option(help="v2-binary, v2-json, grpc, tfserving or eas (default: grpc for a grpc:// URL, else v2-binary).")] = None,
    input: Annotated[list[str], typer.Option("--input", "-i", metavar="SPEC", help="[NAME=]shape/dtype (e.g. 1,224,224,3/float32) or @inputs.npz; default: from the model metadata.")] = [],  # noqa: B006
    transport: Annotated[Optional[str], typer.Option(help="Compact transport for float32 tensors: int8, uint8, float16 (v2/gRPC).")] = None,
    compression: Annotated[Optional[str], typer.Option(help="Body compression: zstd, gzip or deflate (v2 REST).")] = None,
    token: Annotated[Optional[str], typer.Option(envvar="MODELPOD_TOKEN", help="Token for a server that needs one.")] = None,
    save: Annotated[Optional[Path], typer.Option(help="Also write the results as JSON here (for modelpod bench-report).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write an HTML report (self-contained: tables and SVG charts) here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON instead of a table.")] = False,
) -> None:
    """Load-test a model on any KServe v2 server: rps, p50/p90/p99, errors, bytes per concurrency.

    The results are printed (and saved with --save) before the report is written, so a report that
    cannot be written loses nothing. Compare saved runs with: modelpod bench-report A.json B.json.
    """
    from modelpod.bench.runner import parse_duration, parse_input_spec, parse_levels, protocol_for, run_cli

    try:
        levels, seconds, protocol = parse_levels(concurrency), parse_duration(duration), protocol_for(url, protocol)
        for spec in input:
            parse_input_spec(spec)
    except ValueError as exc:
        _usage(str(exc))
    try:
        written = run_cli(url, model, levels, seconds, protocol, input, transport, compression, token, report, save,
                          as_json, console, err_console)
    except ValueError as exc:
        _fail(str(exc))
    if not written:
        raise typer.Exit(EXIT_FAILED)


@app.command("bench-report")
def bench_report(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN.json", help="Results saved by modelpod bench --save (or its --json output); the first is the baseline the others are compared with.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path("bench-report.html"),
) -> None:
    """Render saved modelpod bench runs as one HTML report, side by side when there are several."""
    from modelpod.bench.report import load_run, run_labels, write_report

    try:
        docs = [load_run(path) for path in runs]
    except ValueError as exc:
        _fail(str(exc))
    try:
        write_report(output, list(zip(run_labels(runs), docs)))
    except OSError as exc:
        _fail(f"could not write {output}: {exc.strerror or exc}")
    console.print(f"wrote {output} ({len(docs)} run{'s' if len(docs) > 1 else ''})", highlight=False)


def _add_env_commands() -> None:
    from modelpod.cli_env import env_app

    app.add_typer(env_app, name="env")


_add_env_commands()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
