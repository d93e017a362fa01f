"""What a worker lets a job reach: code by module, LMs by API base and key variable, MCP servers by URL.

Anyone who can write to the jobs or candidates topic can ask a worker to import code or to send its
API key somewhere, so a worker checks every reference against the allow-lists it was started with
(``--allow-module``, ``--allow-api-base``, ``--allow-key-env``, ``--allow-mcp-server``) before it
imports or calls anything.

Defaults, chosen so that a worker started with no flags runs the local demo and nothing else:

* modules: only dspex's own (``dspex.*`` is always allowed);
* API bases: loopback only (``http(s)://127.0.0.1``, ``localhost``, ``[::1]``, any port);
* key variables: with no ``--allow-key-env``, a key may be sent to a loopback API base only; to any
  other allowed base the key variable must be named explicitly;
* MCP servers: none. Only streamable-HTTP servers (``http(s)://`` URLs, the URL and paths under it)
  named by ``--allow-mcp-server`` are reached; stdio servers never are (they would start processes).

    >>> policy = SecurityPolicy(allow_api_bases=["https://api.openai.com/v1"],
    ...                         allow_key_envs=["OPENAI_API_KEY"])
    >>> policy.check_lm("https://api.openai.com/v1", "OPENAI_API_KEY")
    >>> policy.check_lm("https://evil.example/v1", "OPENAI_API_KEY")
    Traceback (most recent call last):
    ...
    dspex.errors.SecurityPolicyError: API base https://evil.example/v1 is not allowed ...
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from dspex.errors import ConfigurationError, SecurityPolicyError

__all__ = ["ALWAYS_ALLOWED_MODULES", "SecurityPolicy", "is_loopback_url"]

ALWAYS_ALLOWED_MODULES = ("dspex",)
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
_SCHEMES = frozenset({"http", "https"})


@dataclass(frozen=True)
class _Base:
    """An API base split for comparison: scheme, host, port and path prefix."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> _Base:
        parts = urlsplit(url.strip())
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise ConfigurationError(f"API base {url!r} must be an http(s) URL such as https://host/v1")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ConfigurationError(f"API base {url!r} has an invalid port") from exc
        return cls(parts.scheme, parts.hostname.lower(), port, parts.path.rstrip("/"))

    def covers(self, other: _Base) -> bool:
        """Same origin, and ``other``'s path equals or lies under this one's."""
        same_origin = (self.scheme, self.host, self.port) == (other.scheme, other.host, other.port)
        return same_origin and (other.path == self.path or other.path.startswith(self.path + "/"))


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at this machine (127.0.0.0/8, ::1 or localhost)."""
    try:
        host = _Base.parse(url).host
    except ConfigurationError:
        return False
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SecurityPolicy:
    """A worker's allow-lists (see the module docs for the defaults)."""

    def __init__(
        self,
        *,
        allow_modules: Iterable[str] = (),
        allow_api_bases: Iterable[str] | None = None,
        allow_key_envs: Iterable[str] | None = None,
        allow_mcp_servers: Iterable[str] = (),
    ) -> None:
        """``allow_api_bases`` / ``allow_key_envs``: None (or empty) selects the loopback defaults.

        ``allow_mcp_servers``: streamable-HTTP MCP server URLs (empty: no MCP server is reached).
        """
        self.allow_modules = _modules(allow_modules)
        bases = [base.rstrip("/") for base in allow_api_bases or ()]
        self.allow_api_bases: tuple[str, ...] | None = tuple(bases) or None
        self._bases = [_Base.parse(base) for base in bases]
        keys = [key.strip() for key in allow_key_envs or ()]
        if any(not key for key in keys):
            raise ConfigurationError("--allow-key-env needs an environment variable name")
        self.allow_key_envs: tuple[str, ...] | None = tuple(keys) or None
        self.allow_mcp_servers = tuple(url.strip().rstrip("/") for url in allow_mcp_servers)
        self._mcp_servers = [_mcp_url(url, flag=True) for url in self.allow_mcp_servers]

    @property
    def modules(self) -> tuple[str, ...]:
        """Every module a job may import from: dspex's own plus the allowed ones."""
        return ALWAYS_ALLOWED_MODULES + tuple(
            m for m in self.allow_modules if m not in ALWAYS_ALLOWED_MODULES
        )

    def check_lm(self, api_base: str, api_key_env: str | None) -> None:
        """Raise SecurityPolicyError unless an LM at ``api_base`` keyed by ``api_key_env`` is allowed."""
        self.check_api_base(api_base)
        if api_key_env is not None:
            self.check_key_env(api_key_env, api_base)

    def check_api_base(self, api_base: str) -> None:
        """Raise SecurityPolicyError unless ``api_base`` is allowed."""
        if not api_base:
            raise SecurityPolicyError(
                "the job's LM has no API base (its provider has no default endpoint): give the LM "
                "api_base=... (an endpoint this worker allows with --allow-api-base)"
            )
        if self.allow_api_bases is None:
            if not is_loopback_url(api_base):
                raise SecurityPolicyError(
                    f"API base {api_base} is not allowed: this worker allows loopback API bases only "
                    "(start it with --allow-api-base URL to allow another)"
                )
            return
        try:
            wanted = _Base.parse(api_base)
        except ConfigurationError as exc:
            raise SecurityPolicyError(f"API base {api_base!r} is not allowed: {exc}") from exc
        if not any(base.covers(wanted) for base in self._bases):
            raise SecurityPolicyError(
                f"API base {api_base} is not allowed by this worker (allowed: "
                f"{', '.join(self.allow_api_bases)}); start it with --allow-api-base {api_base} to allow it"
            )

    def check_key_env(self, api_key_env: str, api_base: str) -> None:
        """Raise SecurityPolicyError unless the key in ``api_key_env`` may be sent to ``api_base``."""
        if self.allow_key_envs is None:
            if is_loopback_url(api_base):
                return
            raise SecurityPolicyError(
                f"key variable {api_key_env} may not be sent to {api_base}: with no --allow-key-env "
                "this worker sends keys to loopback API bases only; "
                f"start it with --allow-key-env {api_key_env}"
            )
        if api_key_env not in self.allow_key_envs:
            raise SecurityPolicyError(
                f"key variable {api_key_env} is not allowed by this worker (allowed: "
                f"{', '.join(self.allow_key_envs)}); start it with --allow-key-env {api_key_env} to allow it"
            )

    def check_mcp_server(self, url: str) -> None:
        """Raise SecurityPolicyError unless the streamable-HTTP MCP server at ``url`` is allowed."""
        try:
            wanted = _mcp_url(url, flag=False)
        except ConfigurationError as exc:
            raise SecurityPolicyError(str(exc)) from exc
        if not any(server.covers(wanted) for server in self._mcp_servers):
            allowed = ", ".join(self.allow_mcp_servers) or "none"
            raise SecurityPolicyError(
                f"MCP server {url} is not allowed by this worker (allowed: {allowed}); "
                f"start it with --allow-mcp-server {url} to allow it"
            )

    def describe(self) -> str:
        """One line for the worker's start-up log."""
        bases = ", ".join(self.allow_api_bases) if self.allow_api_bases else "loopback only"
        keys = ", ".join(self.allow_key_envs) if self.allow_key_envs else "any, to loopback bases only"
        mcp = ", ".join(self.allow_mcp_servers) or "none"
        return (
            f"modules: {', '.join(self.modules)}; API bases: {bases}; key variables: {keys}; "
            f"MCP servers: {mcp}"
        )

    def __repr__(self) -> str:
        return (
            f"SecurityPolicy(allow_modules={self.allow_modules!r}, allow_api_bases={self.allow_api_bases!r}, "
            f"allow_key_envs={self.allow_key_envs!r}, allow_mcp_servers={self.allow_mcp_servers!r})"
        )


def _mcp_url(url: str, *, flag: bool) -> _Base:
    """An MCP server URL split for comparison; ConfigurationError unless it is streamable HTTP."""
    parts = urlsplit(url.strip())
    if parts.scheme not in _SCHEMES or not parts.hostname:
        where = "--allow-mcp-server needs" if flag else f"MCP server {url!r} is not allowed: workers reach"
        raise ConfigurationError(
            f"{where} streamable-HTTP MCP servers only, named by an http(s) URL such as "
            "http://host:8000/mcp (stdio servers would start processes)"
        )
    try:
        return _Base.parse(url)
    except ConfigurationError as exc:
        raise ConfigurationError(f"MCP server {url!r} has an invalid address") from exc


def _modules(names: Iterable[str]) -> tuple[str, ...]:
    cleaned = tuple(name.strip() for name in names)
    bad = [name for name in cleaned if not name or not all(part.isidentifier() for part in name.split("."))]
    if bad:
        raise ConfigurationError(f"--allow-module needs dotted module names like 'mypkg.metrics', got {bad}")
    return cleaned
