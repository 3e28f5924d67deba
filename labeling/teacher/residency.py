"""Data residency: the check of what the teacher connects to, and the addresses the connection must use.

`Guard.vet(url)` parses the URL (`endpoints.py`), matches it against `allowed_endpoints`, resolves the
name (A and AAAA) and checks every address, then PINS those addresses: the HTTP client dials only an
address the guard checked (`transport.py`), so a second DNS answer cannot move the connection (rebinding).
Nothing here opens a connection. See docs/privacy.md for what is and is not guaranteed.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable

from .endpoints import AllowEntry, Endpoint, EndpointError, IPAddress, contains, parse_endpoint, parse_entry, unmapped
from .settings import Settings

# The networks inside an organisation by definition: loopback, RFC 1918, link-local, IPv6 unique-local.
INSIDE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "::1/128", "fc00::/7",
    "fe80::/10"))

Resolver = Callable[[str, int], list[IPAddress]]


class ResidencyError(PermissionError):
    """An endpoint the residency settings do not allow; raised before any connection is opened."""


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address (A and AAAA) the system resolver gives for `host`, IPv4-mapped ones as IPv4."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResidencyError(f"host {host} does not resolve ({exc}); nothing was sent (fix: check the name, "
                             "or use the endpoint's IP address)") from None
    addresses = [unmapped(ipaddress.ip_address(info[4][0].split("%")[0])) for info in infos]
    return list(dict.fromkeys(addresses))


def refusal(exc: BaseException | None) -> ResidencyError | None:
    """The ResidencyError behind an HTTP client error (the openai client wraps it), if any."""
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, ResidencyError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


class Guard:
    """Checks endpoints against the settings and remembers the addresses each checked (host, port) may use."""

    def __init__(self, settings: Settings, resolver: Resolver = resolve):
        self.settings, self.resolver = settings, resolver
        self.entries: list[AllowEntry] = [parse_entry(text) for text in settings.allowed_endpoints]
        self.networks = [entry.network for entry in self.entries if entry.network is not None]
        self._pins: dict[tuple[str, int], list[IPAddress] | None] = {}
        self._lock = threading.Lock()
        self.proxy = self.vet(settings.proxy, what="proxy") if settings.proxy else None

    def vet(self, url: str, what: str = "endpoint") -> Endpoint:
        """Raise ResidencyError unless the settings allow `url`; pin the addresses that were checked."""
        try:
            endpoint = parse_endpoint(url)
        except EndpointError as exc:
            raise ResidencyError(f"{what} refused, nothing was sent: {exc}") from None
        key = (endpoint.host, endpoint.port)
        named = any(entry.names(endpoint) for entry in self.entries)
        on_prem = self.settings.residency == "on-prem"
        if not (on_prem or self.networks and not named):  # no address rule applies: resolve when connecting
            if self.entries and not named:
                raise self._not_listed(url, endpoint, what, [])
            with self._lock:
                self._pins.setdefault(key, None)
            return endpoint
        addresses = self._addresses(endpoint)
        if self.entries and not named and not all(self._listed(a) for a in addresses):
            raise self._not_listed(url, endpoint, what, addresses)
        outside = [a for a in addresses if not (self._inside(a) or self._listed(a))]
        if on_prem and outside:
            shown = ", ".join(map(str, outside))
            raise ResidencyError(
                f"{what} {url} (host {endpoint.host}) resolves to {shown}, outside the on-prem network, and "
                f"residency is 'on-prem'; nothing was sent (fix: use an endpoint inside your network, add its "
                f"network as a CIDR range to allowed_endpoints in assay.yaml if it is yours, or set residency: cloud)")
        with self._lock:
            self._pins[key] = addresses
        return endpoint

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses a connection to (host, port) may dial: those checked by `vet` (resolved now, once,
        when no address rule applied). ResidencyError for a host `vet` never allowed."""
        key = (host.lower().rstrip("."), port)
        with self._lock:
            if key not in self._pins:
                raise ResidencyError(f"connection to {host}:{port} refused: it was never checked against the "
                                     "residency settings (an unexpected redirect or proxy?); nothing was sent")
            pinned = self._pins[key]
        if pinned is None:
            literal = _literal(host)
            pinned = [literal] if literal is not None else self.resolver(host, port)
            with self._lock:
                pinned = self._pins[key] = self._pins[key] or pinned
        return pinned

    def _addresses(self, endpoint: Endpoint) -> list[IPAddress]:
        if endpoint.address is not None:
            return [unmapped(endpoint.address)]
        with self._lock:
            pinned = self._pins.get((endpoint.host, endpoint.port))
        addresses = pinned or self.resolver(endpoint.host, endpoint.port)
        if not addresses:
            raise ResidencyError(f"host {endpoint.host} resolves to no address; nothing was sent")
        return addresses

    def _listed(self, address: IPAddress) -> bool:
        return any(contains(network, address) for network in self.networks)

    @staticmethod
    def _inside(address: IPAddress) -> bool:
        return any(contains(network, address) for network in INSIDE_NETWORKS)

    def _not_listed(self, url: str, endpoint: Endpoint, what: str, addresses: list[IPAddress]) -> ResidencyError:
        where = f" (resolves to {', '.join(map(str, addresses))})" if addresses and endpoint.address is None else ""
        return ResidencyError(
            f"{what} {url} (host {endpoint.host}{where}) is not in allowed_endpoints "
            f"{self.settings.allowed_endpoints}; "
            f"nothing was sent (fix: add '{endpoint.host}' or '{endpoint}' to allowed_endpoints in your assay.yaml, "
            "or point the question's base_url at an allowed endpoint)")


def _literal(host: str) -> IPAddress | None:
    try:
        return unmapped(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def check_endpoint(url: str, settings: Settings, resolver: Resolver = resolve) -> Endpoint:
    """Raise ResidencyError when the settings do not allow `url` (a one-off `Guard(settings).vet(url)`)."""
    return Guard(settings, resolver).vet(url)
