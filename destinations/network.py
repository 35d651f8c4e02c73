"""Where aamdest may send (CONTRACT §3): URL checks when configured, address pinning when sending.

Two moments check the same policy:

- `validate_url` when a destination or token URL is configured: a clear
  `ValidationError` for a bad scheme, credentials in the URL, or a host that is
  or resolves to a non-public address.
- `resolve_target` just before a request: the host is resolved once, every
  address is checked, and the caller connects to exactly those addresses, so a
  name cannot be re-pointed at an internal address between check and connect
  (DNS rebinding).

Which addresses are public is `destinations.addresses`. Name resolution goes
through `resolve_host`, looked up at call time, so tests replace it by patching
this module's attribute (`tests.dns.use_resolver`; there is no DNS in the test
sandbox).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from destinations.addresses import IPAddress, non_canonical_reason, parse_ip_literal, refused_kind

DEFAULT_PORTS = {"https": 443, "http": 80}
# How long saving a URL waits for its host's addresses: a hung resolver must not hold a web thread.
CONFIGURATION_LOOKUP_S = 2.0
# One label of a host name in its ASCII (IDNA) form.
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


class NetworkPolicyError(Exception):
    """A URL or address that aamdest must not send to."""


class AddressRefused(NetworkPolicyError):
    """Raised at send time: the scheme, the host or one of its addresses is refused."""


@dataclass(frozen=True)
class Target:
    """Where one request goes: `host` for TLS and the Host header, `address` to connect to.

    `addresses` holds every checked address of the host (`address` first), so
    the HTTP client may fall back between IPv4 and IPv6 without resolving again.
    """

    scheme: str
    host: str
    port: int
    address: str
    addresses: tuple[str, ...] = ()


def resolve_host(host: str, port: int) -> list[str]:
    """Return the IP addresses of `host`, in preference order; raise OSError when it cannot."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def validate_url(url: str, *, field: str) -> str:
    """Return `url` when aamdest may send to it; raise ValidationError saying why not.

    `field` names the setting in the messages. A host name that cannot be
    resolved now is accepted: partners configure names before their DNS is
    live, and `resolve_target` checks the addresses again at every send, so
    an unresolvable name can never lead to a refused address being reached.
    """
    try:
        parts = _split(url, allowed_schemes=_allowed_schemes())
        _check_host(parts.hostname or "")
        addresses = _lookup_within(parts, seconds=CONFIGURATION_LOOKUP_S)
    except NetworkPolicyError as error:
        raise ValidationError(f"{field}: {error}", code="refused_url") from None
    except OSError:
        return url  # unresolvable now (or not within the wait): checked again at send time
    try:
        _check_addresses(parts.hostname or "", addresses)
    except NetworkPolicyError as error:
        raise ValidationError(f"{field}: {error}", code="refused_url") from None
    return url


def resolve_target(url: str) -> Target:
    """Resolve `url`'s host once and return where to connect.

    Raises AddressRefused when the scheme or the host is refused, when the host
    cannot be resolved, or when any of its addresses is refused.
    """
    try:
        parts = _split(url, allowed_schemes=_allowed_schemes())
        host = parts.hostname or ""
        _check_host(host)
        addresses = _lookup(parts)
    except NetworkPolicyError as error:
        raise AddressRefused(str(error)) from None
    except OSError as error:
        raise AddressRefused(f"cannot resolve host {host!r}: {error.strerror or error}") from None
    if not addresses:
        raise AddressRefused(f"host {host!r} has no address")
    try:
        _check_addresses(host, addresses)
    except NetworkPolicyError as error:
        raise AddressRefused(str(error)) from None
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    return Target(parts.scheme, host, port, addresses[0], tuple(addresses))


def _allowed_schemes() -> tuple[str, ...]:
    # Read at call time: tests and settings overrides change it.
    return ("https", "http") if settings.AAMDEST_ALLOW_HTTP else ("https",)


def _split(url: str, *, allowed_schemes: tuple[str, ...]) -> SplitResult:
    if not isinstance(url, str) or not url.strip():
        raise NetworkPolicyError("the URL is empty")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise NetworkPolicyError(f"{url!r} is not a valid URL: it contains spaces or control characters")
    if not url.isascii():
        raise NetworkPolicyError(
            # The URL is not repeated: it may carry a password.
            "the URL contains non-ASCII characters: give the host in its IDNA form (xn--...) "
            "and percent-encode the path and query"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as error:
        raise NetworkPolicyError(f"{url!r} is not a valid URL: {error}") from None
    if parts.port == 0:
        raise NetworkPolicyError(f"{url!r} names port 0, where nothing can be reached")
    if parts.scheme not in allowed_schemes:
        hint = "" if "http" in allowed_schemes else " (http:// needs AAMDEST_ALLOW_HTTP=1)"
        raise NetworkPolicyError(f"{url!r} must start with https://{hint}")
    if parts.username is not None or parts.password is not None:
        raise NetworkPolicyError(f"{_redact(parts)!r} must not carry a user name or password")
    if not parts.hostname:
        raise NetworkPolicyError(f"{url!r} has no host")
    if parse_ip_literal(parts.hostname) is None and not _is_host_name(parts.hostname):
        raise NetworkPolicyError(f"{url!r} does not have a valid host name")
    return parts


def _is_host_name(host: str) -> bool:
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = ascii_host.removesuffix(".").split(".")
    return len(ascii_host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def _redact(parts: SplitResult) -> str:
    # Never echo a password from the URL back into a message or a log.
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://***@{host}{parts.path}"


def _check_host(host: str) -> None:
    """Refuse a literal address (in any of its spellings) that is not public, and loopback names.

    `localhost` and `*.localhost` (RFC 6761, trailing dot or not) always mean this
    machine: refused by name, even where the resolver cannot answer for them.
    """
    literal = parse_ip_literal(host)
    if literal is not None:
        _check_address(host, literal)
    ambiguity = non_canonical_reason(host)
    if ambiguity is not None:
        raise NetworkPolicyError(f"host {ambiguity}: curl and browsers may read it differently")
    if literal is not None:
        return
    name = host.lower().rstrip(".")
    if (name == "localhost" or name.endswith(".localhost")) and not settings.AAMDEST_ALLOW_PRIVATE_NETWORKS:
        raise NetworkPolicyError(
            f"host {host!r} is a loopback name; aamdest only sends to public addresses "
            "(AAMDEST_ALLOW_PRIVATE_NETWORKS=1 lifts this in development)"
        )


def _lookup(parts: SplitResult) -> list[str]:
    host = parts.hostname or ""
    literal = parse_ip_literal(host)
    if literal is not None:
        return [str(literal)]
    return resolve_host(host, parts.port or DEFAULT_PORTS[parts.scheme])


def _lookup_within(parts: SplitResult, *, seconds: float) -> list[str]:
    """`_lookup` on a daemon thread, waiting at most `seconds`; raises TimeoutError past them."""
    answers: list[list[str] | BaseException] = []

    def run() -> None:
        try:
            answers.append(_lookup(parts))
        except BaseException as error:  # re-raised in the caller's thread below
            answers.append(error)

    thread = threading.Thread(target=run, name="aamdest-check-url", daemon=True)
    thread.start()
    thread.join(seconds)
    if not answers:
        raise TimeoutError(f"no address for {parts.hostname!r} within {seconds} s")
    if isinstance(answers[0], BaseException):
        raise answers[0]
    return answers[0]


def _check_addresses(host: str, addresses: list[str]) -> None:
    for address in addresses:
        try:
            parsed = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            raise NetworkPolicyError(f"host {host!r} resolved to {address!r}, not an IP address") from None
        _check_address(host, parsed)


def _check_address(host: str, address: IPAddress) -> None:
    if settings.AAMDEST_ALLOW_PRIVATE_NETWORKS:
        return
    kind = refused_kind(address)
    if kind is None:
        return
    shown = host if host == str(address) else f"{host!r} ({address})"
    article = "an" if kind[0] in "aeiou" else "a"
    raise NetworkPolicyError(
        f"host {shown} is {article} {kind} address; aamdest only sends to public addresses "
        "(AAMDEST_ALLOW_PRIVATE_NETWORKS=1 lifts this in development)"
    )

