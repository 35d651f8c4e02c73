"""The last word on where a request connects: only to the addresses `resolve_target` checked.

`CURLOPT_RESOLVE` hands libcurl the checked addresses of a name, so it does not resolve it again.
This guard covers every other case, whatever curl makes of a host spelling (CONTRACT §3): libcurl
asks it for each socket it opens, and it refuses any address that was not checked, so a
connection to an unchecked address fails before a byte is sent.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import pycurl

from destinations.network import Target

SocketOpener = Callable[[int, Any], "socket.socket | int"]


def pinned_socket_opener(target: Target) -> SocketOpener:
    """An `OPENSOCKETFUNCTION` that opens sockets to `target`'s checked addresses only."""
    allowed = frozenset(_normalized(address) for address in (target.addresses or (target.address,)))

    def open_socket(purpose: int, address: Any) -> socket.socket | int:
        host = address.addr[0]
        if _normalized(host) not in allowed:
            return pycurl.SOCKET_BAD  # type: ignore[no-any-return]
        return socket.socket(address.family, address.socktype, address.protocol)

    return open_socket


def _normalized(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return address
