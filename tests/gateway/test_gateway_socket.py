"""A ``unix:`` listen socket that another user can reach: the shipped units run the agent and the gateway as
different transient users with ``UMask=0077``, which leaves a socket ``srwx------`` unless the gateway sets its
group and mode (``socket.group``, ``socket.mode``)."""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator

import grpc
import pytest

from agent.errors import GatewayError
from tests.fakes.gateway_fixtures import StartGateway, health_status

NOBODY = 65534  # nobody / nogroup on Debian


@pytest.fixture
def umask_0077() -> Iterator[None]:
    old = os.umask(0o077)  # as the units' UMask=0077
    yield
    os.umask(old)


@pytest.fixture
def shared_dir() -> Iterator[pathlib.Path]:
    """A folder another user can traverse (pytest's tmp_path is 0700), as RuntimeDirectoryMode=0755."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="gw-sock-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _connect_as(uid: int, gid: int, path: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """Connect to ``path`` as another user (Debian's python3: the venv may not be readable by that user)."""
    return subprocess.run(["/usr/bin/python3", "-c", "import socket, sys; s = socket.socket(socket.AF_UNIX); "
                           "s.connect(sys.argv[1]); print('connected')", str(path)],
                          user=uid, group=gid, extra_groups=[], capture_output=True, text=True, timeout=20, env={})


def _other_users() -> str | None:
    if os.geteuid() != 0:
        return "connecting as another user needs root (CI runs as root)"
    if not os.access("/usr/bin/python3", os.X_OK):
        return "no /usr/bin/python3 to connect as another user"
    return None


@pytest.mark.parametrize(("socket", "mode", "gid"), [
    # no group: every local user may connect, as to a loopback port
    ({}, 0o666, None),
    # a shared group: its members only
    ({"group": "nogroup"}, 0o660, NOBODY),
    # an explicit mode
    ({"group": str(NOBODY), "mode": "0640"}, 0o640, NOBODY),
])
def test_the_socket_gets_its_mode_and_group_whatever_the_umask(
        start_gateway: StartGateway, umask_0077: None, shared_dir: pathlib.Path,
        socket: dict[str, str], mode: int, gid: int | None) -> None:
    path = shared_dir / "gateway.sock"
    gateway = start_gateway(listen=f"unix:{path}", socket=socket)
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == mode
    if gid is not None:
        assert st.st_gid == gid
    with grpc.insecure_channel(gateway.address) as channel:
        assert health_status(channel) == "SERVING"


def test_another_user_connects_to_the_socket(start_gateway: StartGateway, umask_0077: None,
                                             shared_dir: pathlib.Path) -> None:
    if why := _other_users():
        pytest.skip(why)
    open_sock, group_sock = shared_dir / "open.sock", shared_dir / "group.sock"
    start_gateway(listen=f"unix:{open_sock}")
    start_gateway(listen=f"unix:{group_sock}", socket={"group": "nogroup"})
    assert _connect_as(NOBODY, NOBODY, open_sock).stdout.strip() == "connected"
    assert _connect_as(NOBODY, NOBODY, group_sock).stdout.strip() == "connected"  # in the group
    refused = _connect_as(NOBODY, 44, group_sock)  # nobody in group video only: not in nogroup
    assert refused.returncode != 0 and "Permission denied" in refused.stderr


def test_a_group_that_does_not_exist_is_refused_with_what_to_do(start_gateway: StartGateway,
                                                                shared_dir: pathlib.Path) -> None:
    with pytest.raises(GatewayError, match=r"socket.group 'no-such-group-x': no such group; create it "
                                           r"\(groupadd --system no-such-group-x\) or leave socket.group out"):
        start_gateway(listen=f"unix:{shared_dir / 'gw.sock'}", socket={"group": "no-such-group-x"})
