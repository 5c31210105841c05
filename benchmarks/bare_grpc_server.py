"""The per-call floor of grpcio on this machine: a bare KServe v2 gRPC server for the add model.

The same service path and proto as ``modelpod serve`` (``inference.GRPCInferenceService``,
modelpod's copy of the v2 messages), no validation beyond what the maths needs, no limits, no
metrics, no event loop: ``ModelInfer`` reads ``raw_input_contents`` as float32, adds, and answers
``raw_output_contents``. Two flavours of grpcio, as modelpod could use either: ``--flavour sync``
(``grpc.server`` with a thread pool, what modelpod uses) and ``--flavour aio`` (``grpc.aio``).
Also answers ``ServerReady`` (the benchmark's readiness probe) and ``ModelMetadata`` (the bench
client reads the inputs from it).

    python benchmarks/bare_grpc_server.py PORT [--flavour sync|aio]
"""

from __future__ import annotations

import argparse
import asyncio
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

from modelpod.protos import grpc_service_pb2 as pb

SERVICE = "inference.GRPCInferenceService"


def model_infer(request: pb.ModelInferRequest, context: object) -> pb.ModelInferResponse:
    x, y = (np.frombuffer(raw, np.float32) for raw in request.raw_input_contents)
    out = x + y
    response = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
    response.outputs.add(name="out", datatype="FP32", shape=list(request.inputs[0].shape))
    response.raw_output_contents.append(out.tobytes())
    return response


def server_ready(request: pb.ServerReadyRequest, context: object) -> pb.ServerReadyResponse:
    return pb.ServerReadyResponse(ready=True)


def model_metadata(request: pb.ModelMetadataRequest, context: object) -> pb.ModelMetadataResponse:
    meta = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=request.name, versions=["1"], platform="python",
        inputs=[meta(name=n, datatype="FP32", shape=[-1]) for n in ("x", "y")],
        outputs=[meta(name="out", datatype="FP32", shape=[-1])])


def handlers(aio: bool = False) -> grpc.GenericRpcHandler:
    def unary(fn, request_cls, response_cls):  # type: ignore[no-untyped-def]
        if aio:  # grpc.aio runs coroutines on its loop
            sync_fn = fn

            async def fn(request, context):  # type: ignore[no-untyped-def]
                return sync_fn(request, context)
        return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=request_cls.FromString,
                                                   response_serializer=response_cls.SerializeToString)
    return grpc.method_handlers_generic_handler(SERVICE, {
        "ModelInfer": unary(model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
        "ServerReady": unary(server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
        "ModelMetadata": unary(model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    })


def serve_sync(port: int) -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=64))
    server.add_generic_rpc_handlers((handlers(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


async def serve_aio(port: int) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handlers(aio=True),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--flavour", choices=("sync", "aio"), default="sync")
    args = parser.parse_args()
    if args.flavour == "sync":
        serve_sync(args.port)
    else:
        asyncio.run(serve_aio(args.port))
