"""``modelpod.connect`` picks the client flavour from the URL; each class speaks its own scheme."""

from __future__ import annotations

import asyncio

import pytest

import modelpod
from modelpod.client import AsyncClient, AsyncGrpcClient, Client, GrpcClient, connect, connect_async


def test_connect_picks_the_flavour_from_the_url() -> None:
    with connect("http://127.0.0.1:1") as http, connect("grpc://127.0.0.1:1") as grpc_client:
        assert type(http) is Client and type(grpc_client) is GrpcClient
    with modelpod.connect("127.0.0.1:1") as bare:  # no scheme: HTTP
        assert type(bare) is Client


def test_connect_async_picks_the_flavour_from_the_url() -> None:
    async def main() -> tuple[type, type]:
        http, grpc_client = connect_async("http://127.0.0.1:1"), connect_async("grpc://127.0.0.1:1")
        await http.close()
        await grpc_client.close()
        return type(http), type(grpc_client)

    assert asyncio.run(main()) == (AsyncClient, AsyncGrpcClient)


@pytest.mark.parametrize(("cls", "url"), [(Client, "grpc://127.0.0.1:1"), (GrpcClient, "http://127.0.0.1:1")])
def test_a_class_refuses_a_scheme_it_does_not_speak(cls: type, url: str) -> None:
    with pytest.raises(ValueError, match="modelpod.connect"):
        cls(url)
