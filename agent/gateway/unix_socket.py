"""Who may connect to the gateway's ``unix:/path`` socket: its group and mode, set explicitly once it is bound.

A process's umask decides a new socket's mode, and connecting needs write permission on it. Under the
shipped units (``UMask=0077``, a transient user each for the agent and the gateway) the socket would be
``srwx------``: only the gateway's own user could connect. :func:`open_unix_socket` sets what the config
says (``socket.group``, ``socket.mode``: 0660 with a group, else 0666) before the server accepts a call.
"""

from __future__ import annotations

import grp
import logging
import os
import pathlib

from agent.errors import GatewayError
from agent.gateway.config import UnixSocketConfig

__all__ = ["open_unix_socket"]

log = logging.getLogger(__name__)


def open_unix_socket(listen: str, access: UnixSocketConfig) -> None:
    """Give the bound socket of ``listen`` (``unix:/path``; other addresses: nothing to do) the group and mode
    of ``access``. GatewayError when the group does not exist or the gateway's user may not use it."""
    if not listen.startswith("unix:"):
        return
    path = pathlib.Path(listen[len("unix:"):])
    if access.group is not None:
        try:
            gid = int(access.group) if access.group.isdigit() else grp.getgrnam(access.group).gr_gid
        except KeyError:
            raise GatewayError(f"socket.group {access.group!r}: no such group; create it (groupadd --system "
                               f"{access.group}) or leave socket.group out") from None
        try:
            os.chown(path, -1, gid)
        except PermissionError:
            raise GatewayError(f"socket.group {access.group!r}: the gateway's user is not a member, so it cannot "
                               "give the socket to that group; add SupplementaryGroups="
                               f"{access.group} to its unit") from None
    mode = access.octal_mode()
    os.chmod(path, mode)
    log.debug("unix socket ready", extra={"path": str(path), "mode": f"{mode:04o}", "group": access.group})
