"""Parsing endpoint URLs and allow-list entries the way the connection will see them (no network access).

A URL becomes (scheme, host, port): user-info is refused, numeric hosts must be canonical dotted IPv4 or
bracketed IPv6, names are lower-cased, IDNA-encoded and lose a trailing dot. An allow-list entry is one
of `scheme://host[:port]`, a host name, or a CIDR range (a bare IP is a /32 or /128); entries match
exactly, never by prefix.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_PORTS = {"http": 80, "https": 443}
_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")
_FORBIDDEN = re.compile(r"[\s\\%\x00-\x1f\x7f]")
URL_FORM = "write it as http(s)://host[:port]/path, e.g. https://llm.example.eu/v1"


class EndpointError(ValueError):
    """A URL or allow-list entry that cannot be checked safely; the message says what to fix."""


@dataclass(frozen=True)
class Endpoint:
    """Where a URL connects: scheme, normalised host, port, and the IP when the host is an IP literal."""

    scheme: str
    host: str
    port: int
    address: IPAddress | None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class AllowEntry:
    """One allow-list entry: an endpoint (scheme, host, port), a host name (any port), or a network."""

    text: str
    endpoint: Endpoint | None = None
    host: str | None = None
    network: IPNetwork | None = None

    def names(self, endpoint: Endpoint) -> bool:
        """Does this entry name `endpoint` (same scheme+host+port, same host, or its IP literal in range)?"""
        if self.endpoint is not None:
            return self.endpoint == endpoint
        if self.host is not None:
            return self.host == endpoint.host
        return endpoint.address is not None and contains(self.network, endpoint.address)


def unmapped(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped IPv6 address (::ffff:a.b.c.d), else the address itself."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def contains(network: IPNetwork | None, address: IPAddress) -> bool:
    """Is `address` (IPv4-mapped addresses as IPv4) inside `network`?"""
    address = unmapped(address)
    return network is not None and address.version == network.version and address in network


def ip_literal(host: str) -> IPAddress | None:
    """The IP of a host that is a canonical IP literal; None for a name; EndpointError for a numeric host
    that is not canonical (134744072, 0x08080808, 010.8.8.8, 8.8.8: resolvers would read them as IPs)."""
    if ":" in host:
        if "%" in host:
            raise EndpointError(f"host [{host}] carries an IPv6 zone id; use the plain address")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise EndpointError(f"host [{host}] is not a valid IPv6 address") from None
    if not _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        return None
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        address = None
    if address is None or str(address) != host:
        raise EndpointError(f"host {host!r} is a non-canonical numeric address (octal, hex, dotless or short "
                            "IPv4); write the address as four decimal numbers, e.g. 10.0.0.5, or use a host name")
    return address


def normalise_host(raw: str) -> str:
    """Lower case, no trailing dot, IDNA (punycode) for non-ASCII names; EndpointError for anything odd."""
    host = raw.strip("[]") if raw.startswith("[") else raw
    if not host or _FORBIDDEN.search(host):
        raise EndpointError(f"host {raw!r} is empty or holds spaces, backslashes, control or %-escaped characters")
    if ":" in host:
        return host.lower()
    host = host[:-1] if host.endswith(".") else host  # "llm.example.eu." is "llm.example.eu"
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise EndpointError(f"host {raw!r} is not a valid internationalised name ({exc})") from None
    host = host.lower()
    if not _NAME.fullmatch(host):
        raise EndpointError(f"host {raw!r} is not a valid host name")
    return host


def parse_endpoint(url: str) -> Endpoint:
    """The (scheme, host, port) `url` connects to; EndpointError when it cannot be checked safely."""
    if _FORBIDDEN.search(url.strip()):
        raise EndpointError(f"endpoint {url!r} holds spaces, backslashes, control or %-escaped characters ({URL_FORM})")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise EndpointError(f"endpoint {url!r} cannot be parsed: {exc} ({URL_FORM})") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise EndpointError(f"endpoint {url!r} must start with http:// or https:// ({URL_FORM})")
    if "@" in parts.netloc:  # the user-info is not shown: it may hold a password
        raise EndpointError(f"endpoint {scheme}://...@{parts.netloc.rsplit('@', 1)[1]} carries user-info before '@' "
                            "(the connection would go to the host after it); fix: remove it and "
                            "pass credentials as the API key")
    if not parts.hostname:
        raise EndpointError(f"endpoint {url!r} has no host name ({URL_FORM})")
    host = normalise_host(parts.hostname)
    return Endpoint(scheme, host, port if port is not None else DEFAULT_PORTS[scheme], ip_literal(host))


def parse_entry(text: str) -> AllowEntry:
    """One `allowed_endpoints` entry; EndpointError (saying the accepted forms) when it is none of them."""
    entry = text.strip()
    forms = ("allow-list entries are scheme://host[:port] (e.g. https://llm.example.eu), a host name "
             "(vllm.internal) or a CIDR range (10.20.0.0/16)")
    if "://" in entry:
        path = urlsplit(entry).path
        if path not in ("", "/"):
            raise EndpointError(f"allow-list entry {text!r} has a path {path!r}; entries match exactly, never by "
                                f"prefix: {forms}")
        try:
            return AllowEntry(text, endpoint=parse_endpoint(entry))
        except EndpointError as exc:
            raise EndpointError(f"allow-list entry: {exc}; {forms}") from None
    if "/" in entry or _is_ip(entry):
        try:
            return AllowEntry(text, network=ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise EndpointError(f"allow-list entry {text!r} is not a valid CIDR range: {forms}") from None
    try:
        host = normalise_host(entry)
        if ip_literal(host) is not None:
            return AllowEntry(text, network=ipaddress.ip_network(host))
    except EndpointError as exc:
        raise EndpointError(f"allow-list entry {text!r}: {exc}; {forms}") from None
    return AllowEntry(text, host=host)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True
