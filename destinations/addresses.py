"""Which IP addresses are public (CONTRACT §3), and every spelling of an address a URL may hold.

Pure functions, no resolving: `destinations.network` applies them to URLs and
to the addresses a host resolves to.
"""

from __future__ import annotations

import ipaddress
import re

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# NAT64's well-known prefix embeds an IPv4 address in its last 32 bits (RFC 6052).
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
_DIGITS = {8: "01234567", 10: "0123456789", 16: "0123456789abcdef"}
# Ranges Python's `is_global` still calls global: deprecated site-local (RFC 3879) and the
# documentation prefix of RFC 9637.
_DEPRECATED_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")
_DOCUMENTATION = ipaddress.IPv6Network("3fff::/20")
# The last label of a name that URL parsers take for a number: "1.2.3.4.5", "1.2.3.0x".
_NUMERIC_LABEL = re.compile(r"\d+|0x[0-9a-f]*")


def refused_kind(address: IPAddress) -> str | None:
    """Name why `address` is not public ("loopback", "private", ...), or None when it is."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return refused_kind(embedded)
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("deprecated site-local", address in _DEPRECATED_SITE_LOCAL if address.version == 6 else False),
        ("documentation", address in _DOCUMENTATION if address.version == 6 else False),
        # Shared (100.64/10), documentation and other special-purpose ranges.
        ("non-public", not address.is_global),
    )
    return next((kind for kind, refused in checks if refused), None)


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64), which is what gets reached."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def non_canonical_reason(host: str) -> str | None:
    """Why a URL parser (curl's, a browser's) could read `host` otherwise than we do, or None.

    Only a dotted quad of plain decimals, or a bracketed IPv6 address without a zone, reads the
    same everywhere; `2130706433`, `0x7f.1`, `127.1`, `1.2.3.0x` or `1.2.3.4.5` do not (curl takes
    some for addresses, some for names it resolves itself).
    """
    bare = host.strip("[]")
    if ":" in bare:
        return "an IPv6 zone index is not accepted" if "%" in bare else None
    literal = parse_ip_literal(host)
    if literal is not None and host == str(literal):
        return None
    last = host.rstrip(".").rsplit(".", 1)[-1].lower()
    if literal is None and not _NUMERIC_LABEL.fullmatch(last):
        return None  # an ordinary name
    written = f"; write it as {literal}" if literal is not None else ""
    return f"{host!r} is not written as a canonical IP address{written}"


def parse_ip_literal(host: str) -> IPAddress | None:
    """Parse `host` as an IP address the way URL parsers and inet_aton do, or return None.

    Besides dotted quads and IPv6, this accepts the legacy IPv4 spellings
    that curl and browsers still honour: `2130706433`, `0177.0.0.1`,
    `0x7f.1`, `127.1` (WHATWG URL "IPv4 parser").
    """
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0] if ":" in host else host)
    except ValueError:
        pass
    return _parse_legacy_ipv4(host)


def _parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    labels = host.split(".")
    if labels and labels[-1] == "" and len(labels) > 1:
        labels = labels[:-1]  # "127.0.0.1." is still an address
    if not 1 <= len(labels) <= 4:
        return None
    parsed = [_parse_ipv4_number(label) for label in labels]
    numbers = [number for number in parsed if number is not None]
    if len(numbers) != len(parsed):
        return None
    *leading, last = numbers
    if any(number > 255 for number in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for index, number in enumerate(leading):
        value += number * 256 ** (3 - index)
    return ipaddress.IPv4Address(value)


def _parse_ipv4_number(label: str) -> int | None:
    text = label.lower()
    base = 10
    if text.startswith("0x"):
        text, base = text[2:], 16
    elif len(text) > 1 and text.startswith("0"):
        text, base = text[1:], 8
    if text == "":
        return 0 if base == 16 else None
    # Digits only: int() would also take "+1" or "1_0", which no URL parser reads as a number.
    if not set(text) <= set(_DIGITS[base]):
        return None
    return int(text, base)
