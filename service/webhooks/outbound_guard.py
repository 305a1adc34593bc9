"""SSRF protection for URLs callers give us (webhook targets).

Two checks, both needed:
- at registration: the URL is http(s), carries no credentials, and its host
  resolves only to globally routable addresses (clear 422 otherwise);
- at connect time (see `service.webhooks.client`): the address actually
  dialled is checked again, so a DNS answer that changes after registration
  (rebinding) cannot reach an internal service.

`WEBHOOK_ALLOW_PRIVATE_NETWORKS=true` lifts the address rule for tests and
local development; the URL shape rules always apply.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import anyio

from service.errors import InvalidContent

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# 100.64.0.0/10 (CGNAT) is not "private" in Python's table but is not global either;
# `is_global` covers it. These extra nets are refused even if a table changes.
_ALWAYS_REFUSED = (
    ipaddress.ip_network("100.64.0.0/10"),
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fc00::/7"),
)


class UnsafeTarget(InvalidContent):
    code = "unsafe_webhook_url"


def _unwrap(address: IPAddress) -> IPAddress:
    """IPv4-mapped (::ffff:a.b.c.d) and 6to4/NAT64-embedded forms count as the IPv4 inside."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in ipaddress.ip_network("64:ff9b::/96"):
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def is_public(address: IPAddress) -> bool:
    inner = _unwrap(address)
    if any(inner in net for net in _ALWAYS_REFUSED if net.version == inner.version):
        return False
    return bool(inner.is_global) and not (
        inner.is_multicast or inner.is_reserved or inner.is_loopback or inner.is_link_local
    )


def check_url_shape(url: str) -> tuple[str, int]:
    """Scheme, credentials and host rules. Returns (host, port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"webhook URL is malformed: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeTarget("webhook URL must use http or https")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget("webhook URL must not contain credentials")
    if not parts.hostname:
        raise UnsafeTarget("webhook URL has no host")
    if len(url) > 2048:
        raise UnsafeTarget("webhook URL is longer than 2048 characters")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        literal = ipaddress.ip_address(host)
        return [literal]
    except ValueError:
        pass
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise UnsafeTarget(f"webhook host {host!r} does not resolve") from None
    found: list[IPAddress] = []
    for info in infos:
        raw = str(info[4][0]).split("%", 1)[0]
        found.append(ipaddress.ip_address(raw))
    return found


def refuse_private(host: str, addresses: list[IPAddress]) -> None:
    # The message never names the address: echoing what an internal name resolves
    # to would map the private network for whoever asks.
    if not addresses or not all(is_public(a) for a in addresses):
        raise UnsafeTarget(
            f"webhook host {host!r} resolves to a loopback, private or otherwise non-public "
            "address; only globally routable targets are allowed"
        )


async def check_webhook_url(url: str, *, allow_private: bool) -> str:
    host, port = check_url_shape(url)
    if not allow_private:
        refuse_private(host, await resolve(host, port))
    return url
