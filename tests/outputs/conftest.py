"""Helpers for the OPC UA server's tests: a real asyncua client, run to completion in the test's thread."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import pathlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from asyncua import Client, ua
from asyncua.crypto import cert_gen
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import DNSName, UniformResourceIdentifier
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.capture.grabber import GrabberStats
from agent.config.models import AgentConfig
from agent.ops.snapshot import AgentSnapshot, CameraProgress, Progress
from agent.runtime.service import AgentService

T = TypeVar("T")
NS = "urn:edge-agent"


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(_wrap(coro))


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


def make_certificate(folder: pathlib.Path, name: str, uri: str, server: bool) -> tuple[pathlib.Path, pathlib.Path]:
    """A self-signed application certificate (DER) and its key (PEM), as OPC UA wants them."""
    key = cert_gen.generate_private_key()
    use = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = cert_gen.generate_self_signed_app_certificate(
        key, name, {"organizationName": "edge-agent tests"},
        [UniformResourceIdentifier(uri), DNSName(socket.gethostname()), DNSName("localhost")], extended=use)
    cert_path, key_path = folder / f"{name}.der", folder / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


async def read_nodes(url: str, paths: list[str], *, setup: Callable[[Client], Awaitable[None]] | None = None,
                     user: str | None = None, password: str | None = None) -> dict[str, Any]:
    """Connect, read each string NodeId of ``paths`` (None for a node that does not exist), disconnect."""
    client = Client(url, timeout=10)
    client.session_timeout = 600_000  # what the server grants (asyncua's default asks for more and warns)
    if user is not None:
        client.set_user(user)
        client.set_password(password or "")
    if setup is not None:
        await setup(client)
    async with client:
        ns = await client.get_namespace_index(NS)
        out: dict[str, Any] = {}
        for path in paths:
            try:
                out[path] = await client.get_node(ua.NodeId(ua.String(path), ua.Int16(ns))).read_value()
            except ua.uaerrors.BadNodeIdUnknown:
                out[path] = None
        return out


async def variable_facts(url: str, path: str) -> tuple[ua.VariantType, int, ua.StatusCode | None]:
    """A variable's value type, its access level, and what a client's write of its own value gets."""
    client = Client(url, timeout=10)
    client.session_timeout = 600_000
    async with client:
        ns = await client.get_namespace_index(NS)
        node = client.get_node(ua.NodeId(ua.String(path), ua.Int16(ns)))
        value = await node.read_data_value()
        access = await node.read_attribute(ua.AttributeIds.AccessLevel)
        try:
            await node.write_value(value.Value)
            refused = None
        except ua.UaStatusCodeError as exc:
            refused = ua.StatusCode(exc.code)
        assert value.Value is not None and access.Value is not None
        return value.Value.VariantType, int(access.Value.Value), refused


def utc(ts: datetime.datetime) -> datetime.datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=datetime.timezone.utc)


def running(config: AgentConfig, *cameras: str) -> Callable[[], AgentSnapshot]:
    """The ops snapshot of an agent (not started) whose ``cameras`` run: the server serves the cameras that run."""
    snapshot = AgentService(config).snapshot
    progress = Progress(tuple(CameraProgress(GrabberStats(cam, 0, 0, 0, 0, 0, 0, "online", None), True, None, "")
                              for cam in cameras), None, None)
    return lambda: dataclasses.replace(snapshot(), progress=progress)
