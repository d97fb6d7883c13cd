"""Who may call: bearer tokens from a file, and the TLS credentials of the gRPC port.

Bearer tokens
    ``token_file`` holds one token per line; blank lines and lines starting with ``#`` are
    ignored, surrounding whitespace is stripped. A token is printable ASCII without spaces (it
    travels in an HTTP/2 header). Every call must carry ``authorization: Bearer <token>``
    naming one of them; anything else is ``UNAUTHENTICATED`` with one fixed message, whatever
    was wrong. Health and reflection are exempt unless ``auth_health_and_reflection``.

    The comparison is constant-time with respect to the tokens: the presented token and every
    configured one are hashed to SHA-256 digests of equal length, and the presented digest is
    compared with :func:`hmac.compare_digest` against *every* configured digest, without an
    early exit, so neither which token matched nor any token's length shows in the timing.
    Tokens are never logged and never put in a status message; a refusal logs the peer, the
    method and the kind of failure (missing, malformed, unknown token), rate-limited.

    Rotation: :meth:`BearerTokenInterceptor.replace_digests` swaps the whole set at once (the
    server does it on SIGHUP, after reading the file again), so a call is checked against the
    old set or the new one, never a mix; calls already admitted go on.

TLS
    With a certificate and key the port is TLS; with a client CA as well, clients must present
    a certificate signed by it (mutual TLS). The files are read when the server is built, so a
    missing or unreadable file is an error before anything listens.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from tgi_collector._limits import RateLimitedLog

__all__ = [
    "DEFAULT_EXEMPT_PREFIXES",
    "UNAUTHENTICATED_MESSAGE",
    "BearerTokenInterceptor",
    "TlsFiles",
    "load_tokens",
    "server_credentials",
]

logger = logging.getLogger(__name__)

#: The one status message of every refused call: it says nothing about what was wrong.
UNAUTHENTICATED_MESSAGE = "missing or invalid bearer token"

#: Method prefixes that need no token unless health and reflection are configured to need one:
#: the standard health service and both reflection versions (grpcurl asks for v1 first and
#: falls back to v1alpha on UNIMPLEMENTED, so v1 must answer UNIMPLEMENTED, not UNAUTHENTICATED).
DEFAULT_EXEMPT_PREFIXES: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def load_tokens(path: str | Path) -> tuple[bytes, ...]:
    """The bearer tokens in ``path`` as SHA-256 digests (the tokens themselves are not kept).

    Raises OSError naming the file when it cannot be read, ValueError naming the file (and the
    line, never its content) when it holds no token or a token that cannot be sent in a header.
    """
    try:
        text = Path(path).read_bytes().decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(
            f"token file {path}: tokens must be printable ASCII (no other bytes)"
        ) from None
    except OSError as exc:
        raise OSError(f"cannot read token file {path}: {exc.strerror or exc}") from None
    digests: list[bytes] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not all(0x21 <= ord(char) <= 0x7E for char in line):
            raise ValueError(
                f"token file {path}, line {number}: a token is printable ASCII without spaces"
            )
        digests.append(_digest(line.encode("ascii")))
    if not digests:
        raise ValueError(f"token file {path} holds no token (one per line; # starts a comment)")
    with contextlib.suppress(OSError):
        mode = Path(path).stat().st_mode
        if os.name == "posix" and mode & 0o077:
            logger.warning(
                "token file %s is accessible to group or others (mode %03o): chmod 600 it",
                path, stat.S_IMODE(mode),
            )  # fmt: skip
    return tuple(dict.fromkeys(digests))


def _matches(presented: bytes, digests: Sequence[bytes]) -> bool:
    """Whether ``presented`` is one of the tokens; looks at every one of them, always."""
    candidate = _digest(presented)
    found = False
    for digest in digests:
        # Non-short-circuit OR: every digest is compared whatever the earlier ones gave.
        found |= hmac.compare_digest(candidate, digest)
    return found


def _check(metadata: Sequence[tuple[str, str | bytes]] | None, digests: Sequence[bytes]) -> str:
    """``""`` when the call presents a valid token, else the kind of failure (for the log)."""
    values = [value for key, value in metadata or () if key.lower() == "authorization"]
    if not values:
        return "no authorization header"
    if len(values) > 1:
        return "several authorization headers"
    (value,) = values
    if not isinstance(value, str):
        return "malformed authorization header"
    scheme, _, credentials = value.partition(" ")
    token = credentials.strip(" ")
    # RFC 7235: the scheme is case-insensitive.
    if scheme.lower() != "bearer" or not token:
        return "authorization header is not 'Bearer <token>'"
    try:
        presented = token.encode("ascii")
    except UnicodeEncodeError:
        return "malformed authorization header"
    return "" if _matches(presented, digests) else "unknown bearer token"


def _refusal_handler(
    handler: grpc.RpcMethodHandler | None, method: str, reason: str, log: RateLimitedLog
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that ends the call UNAUTHENTICATED.

    grpc.aio cannot abort from ``intercept_service`` itself: the refusal has to be a handler.
    An unknown method (``handler`` None) gets a stream-stream one, which serves any caller
    without reading its request.
    """

    async def abort(context: grpc.aio.ServicerContext) -> None:
        # The method name comes from the caller: bounded in the log.
        log.warning("refused %.200s from %s: %s", method, context.peer(), reason)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)

    async def unary_unary(request: object, context: grpc.aio.ServicerContext) -> None:
        await abort(context)

    async def unary_stream(request: object, context: grpc.aio.ServicerContext) -> None:
        await abort(context)

    async def stream_unary(requests: object, context: grpc.aio.ServicerContext) -> None:
        await abort(context)

    async def stream_stream(requests: object, context: grpc.aio.ServicerContext) -> None:
        await abort(context)

    # Requests are not deserialized: a refused caller's bytes are never parsed.
    if handler is not None and not handler.request_streaming:
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(unary_stream)
        return grpc.unary_unary_rpc_method_handler(unary_unary)
    if handler is not None and not handler.response_streaming:
        return grpc.stream_unary_rpc_method_handler(stream_unary)
    return grpc.stream_stream_rpc_method_handler(stream_stream)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses, with ``UNAUTHENTICATED``, every call without a configured bearer token.

    ``digests`` come from :func:`load_tokens`. Methods starting with one of ``exempt_prefixes``
    pass without a token.
    """

    def __init__(
        self,
        digests: Sequence[bytes],
        *,
        exempt_prefixes: Sequence[str] = DEFAULT_EXEMPT_PREFIXES,
    ) -> None:
        if not digests:
            raise ValueError("at least one token is required")
        self._digests = tuple(digests)
        self._exempt = tuple(exempt_prefixes)
        # One line per 10 s at most: a flood of bad calls must not flood the log.
        self._log = RateLimitedLog(logger)

    @property
    def token_count(self) -> int:
        """How many distinct tokens are accepted now."""
        return len(self._digests)

    def replace_digests(self, digests: Sequence[bytes]) -> None:
        """Accept ``digests`` (from :func:`load_tokens`) from the next call on, and no others."""
        if not digests:
            raise ValueError("at least one token is required")
        self._digests = tuple(digests)  # one assignment: a call sees the old set or the new

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        if method.startswith(self._exempt):
            return await continuation(handler_call_details)
        reason = _check(handler_call_details.invocation_metadata, self._digests)
        handler = await continuation(handler_call_details)
        if not reason:
            return handler
        return _refusal_handler(handler, method, reason, self._log)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The PEM files of the gRPC port's TLS; ``client_ca`` set means mutual TLS.

    :meth:`check` raises ValueError for an incomplete set (no file is read).
    """

    cert: str | None = None
    key: str | None = None
    client_ca: str | None = None

    @property
    def enabled(self) -> bool:
        return self.cert is not None

    def check(self) -> None:
        """ValueError naming the missing setting when the set of files is incomplete."""
        if (self.cert is None) != (self.key is None):
            missing, given = (
                ("tls_key_file", "tls_cert_file")
                if self.key is None
                else ("tls_cert_file", "tls_key_file")
            )
            raise ValueError(f"{given} is set but {missing} is not: TLS needs both")
        if self.client_ca is not None and self.cert is None:
            raise ValueError(
                "tls_client_ca_file is set but tls_cert_file and tls_key_file are not:"
                " mutual TLS needs the server's own certificate and key too"
            )


_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


def _read_pem(path: str, setting: str, marker: bytes, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise OSError(f"cannot read {setting} {path}: {exc.strerror or exc}") from None
    if marker not in data:
        # Never echo the content: a key file must not end up in a log.
        raise ValueError(f"{setting} {path} holds no PEM {what}")
    return data


def server_credentials(files: TlsFiles) -> Any:
    """The ``grpc.ServerCredentials`` of ``files``; reads them (OSError, ValueError)."""
    files.check()
    assert files.cert is not None and files.key is not None
    cert = _read_pem(files.cert, "tls_cert_file", _PEM_CERTIFICATE, "certificate")
    key = _read_pem(files.key, "tls_key_file", b"PRIVATE KEY-----", "private key")
    ca = (
        None
        if files.client_ca is None
        else _read_pem(files.client_ca, "tls_client_ca_file", _PEM_CERTIFICATE, "certificate")
    )
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )
