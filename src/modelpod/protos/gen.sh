#!/usr/bin/env bash
# Regenerate the *_pb2.py modules from the .proto files here (needs grpcio-tools).
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m grpc_tools.protoc -I. --python_out=. \
  modelpod/protos/eas_predict.proto modelpod/protos/model_config.proto modelpod/protos/grpc_service.proto \
  modelpod/protos/shared_memory.proto

