"""Who may call, over real sockets: bearer tokens, TLS, mutual TLS, and grpcurl with both.

Certificates are made at test time (``tests/tls_certs.py``, the ``openssl`` binary).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from fixture_server import FixtureServer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpcurl_tool import run_grpcurl
from reference import SEED_SAMPLE
from tls_certs import Pki, make_pki

from tgi_collector._limits import RateLimitedLog
from tgi_collector.auth import (
    UNAUTHENTICATED_MESSAGE,
    _check,
    _refusal_handler,
    load_tokens,
)
from tgi_collector.client import CollectorClient
from tgi_collector.server import CollectorServer, ServerConfig
from tgi_collector.v1 import collector_pb2, collector_pb2_grpc

# Fresh per run, so that finding one in a log or a message cannot be a coincidence.
TOKEN = f"tok-{secrets.token_urlsafe(24)}"
OTHER_TOKEN = f"tok-{secrets.token_urlsafe(24)}"
TOKENS = (TOKEN, OTHER_TOKEN)

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
Metadata = Sequence[tuple[str, str]]


def _bearer(token: str = TOKEN) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(
        f"# collector tokens\n\n  {TOKEN}  \n# {OTHER_TOKEN} (commented out)\n{OTHER_TOKEN}\n"
    )
    return path


def _config(**overrides: Any) -> ServerConfig:
    settings: dict[str, Any] = {"listen": "127.0.0.1:0", "grace_seconds": 0.1}
    settings.update(overrides)
    return ServerConfig(**settings)


@pytest.fixture
async def server(token_file: Path) -> AsyncIterator[CollectorServer]:
    async with CollectorServer(_config(token_file=str(token_file))) as running:
        yield running


@pytest.fixture
async def channel(server: CollectorServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened


@pytest.fixture
def target(fixture_server: FixtureServer) -> str:
    fixture_server.route("/metrics", body=SEED_SAMPLE)
    return fixture_server.url("/metrics")


def _collect(endpoint: str) -> collector_pb2.CollectRequest:
    return collector_pb2.CollectRequest(
        target=collector_pb2.Target(endpoint=endpoint),
        options=collector_pb2.ScrapeOptions(omit_raw_metrics=True, skip_info=True),
    )


def _watch(endpoint: str) -> collector_pb2.WatchRequest:
    return collector_pb2.WatchRequest(
        targets=[collector_pb2.Target(endpoint=endpoint)],
        options=collector_pb2.ScrapeOptions(omit_raw_metrics=True, skip_info=True),
    )


async def _first_watch_message(
    channel: grpc.aio.Channel, endpoint: str, metadata: Metadata | None
) -> collector_pb2.WatchResponse:
    call = collector_pb2_grpc.CollectorServiceStub(channel).Watch(
        _watch(endpoint), metadata=metadata
    )
    try:
        response: collector_pb2.WatchResponse = await asyncio.wait_for(call.read(), 10)
        return response
    finally:
        call.cancel()


async def _list_services(channel: grpc.aio.Channel, metadata: Metadata | None) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata
    )
    names: list[str] = []
    async for response in call:
        names.extend(s.name for s in response.list_services_response.service)
    return names


def _assert_refused(error: grpc.aio.AioRpcError) -> None:
    assert error.code() == UNAUTHENTICATED
    assert error.details() == UNAUTHENTICATED_MESSAGE


# -- the token file ------------------------------------------------------------------------------


def test_token_file_lines(token_file: Path) -> None:
    assert len(load_tokens(token_file)) == 2
    duplicate = token_file.with_name("dup")
    duplicate.write_text(f"{TOKEN}\n{TOKEN}\r\n")
    assert len(load_tokens(duplicate)) == 1


def test_token_file_readable_by_others_is_warned_about(
    token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file.chmod(0o644)
    load_tokens(token_file)
    assert "accessible to group or others (mode 644): chmod 600 it" in caplog.text
    caplog.clear()
    token_file.chmod(0o600)
    load_tokens(token_file)
    assert "chmod" not in caplog.text


def test_missing_token_file_fails_at_construction(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-tokens"
    with pytest.raises(OSError, match=f"cannot read token file {missing}"):
        CollectorServer(_config(token_file=str(missing)))


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n   \n"])
def test_empty_token_file_fails_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"token file {path} holds no token"):
        CollectorServer(_config(token_file=str(path)))


@pytest.mark.parametrize(
    "line", [f"{TOKEN} {OTHER_TOKEN}", f"{TOKEN}\x7f", f"{TOKEN}\u00e9", f"{TOKEN}\x00"]
)
def test_unusable_token_fails_without_echoing_it(tmp_path: Path, line: str) -> None:
    path = tmp_path / "tokens"
    path.write_bytes(f"# first\n{line}\n".encode())
    with pytest.raises(ValueError, match=f"token file {path}") as raised:
        load_tokens(path)
    assert TOKEN not in str(raised.value)


def test_header_checks_the_wire_cannot_produce(token_file: Path) -> None:
    digests = load_tokens(token_file)
    assert _check((("authorization", f"Bearer {TOKEN}"),), digests) == ""
    assert _check((("Authorization", f"Bearer   {TOKEN}"),), digests) == ""
    assert _check((("authorization", f"Bearer {TOKEN}".encode()),), digests) != ""
    assert _check((("authorization", "Bearer t\u00f6ken"),), digests) != ""
    assert _check(None, digests) == "no authorization header"


@pytest.mark.parametrize(
    ("kind", "make"),
    [
        ((False, False), grpc.unary_unary_rpc_method_handler),
        ((False, True), grpc.unary_stream_rpc_method_handler),
        ((True, False), grpc.stream_unary_rpc_method_handler),
        ((True, True), grpc.stream_stream_rpc_method_handler),
    ],
)
def test_refusal_handler_has_the_kind_of_the_refused_one(
    kind: tuple[bool, bool], make: Any
) -> None:
    refusal = _refusal_handler(
        make(lambda *_: None), "/m", "why", RateLimitedLog(logging.getLogger("test"))
    )
    assert (refusal.request_streaming, refusal.response_streaming) == kind
    unknown = _refusal_handler(None, "/m", "why", RateLimitedLog(logging.getLogger("test")))
    assert (unknown.request_streaming, unknown.response_streaming) == (True, True)


# -- bearer tokens over the wire -----------------------------------------------------------------

_REFUSED_METADATA: list[tuple[str, Metadata | None]] = [
    ("none", None),
    ("wrong token", _bearer("not-a-token")),
    ("token prefix", _bearer(TOKEN[:-1])),
    ("token plus a byte", _bearer(TOKEN + "x")),
    ("no scheme", (("authorization", TOKEN),)),
    ("basic scheme", (("authorization", f"Basic {TOKEN}"),)),
    ("scheme without token", (("authorization", "Bearer"),)),
    ("scheme glued to token", (("authorization", f"Bearer{TOKEN}"),)),
    ("two headers", (*_bearer(), *_bearer(OTHER_TOKEN))),
    ("the token under another key", (("x-token", f"Bearer {TOKEN}"),)),
]


@pytest.mark.parametrize(
    "metadata", [m for _, m in _REFUSED_METADATA], ids=[i for i, _ in _REFUSED_METADATA]
)
async def test_collect_and_watch_without_a_valid_token_are_unauthenticated(
    channel: grpc.aio.Channel, target: str, metadata: Metadata | None
) -> None:
    stub = collector_pb2_grpc.CollectorServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Collect(_collect(target), metadata=metadata, timeout=10)
    _assert_refused(raised.value)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _first_watch_message(channel, target, metadata)
    _assert_refused(raised.value)


@pytest.mark.parametrize(
    "metadata",
    [_bearer(), _bearer(OTHER_TOKEN), (("authorization", f"bearer {TOKEN}"),)],
    ids=["first token", "second token", "lower-case scheme"],
)
async def test_collect_and_watch_with_a_token(
    channel: grpc.aio.Channel, target: str, metadata: Metadata
) -> None:
    stub = collector_pb2_grpc.CollectorServiceStub(channel)
    response = await stub.Collect(_collect(target), metadata=metadata, timeout=10)
    assert response.snapshot.request_metrics.success_total == 250
    message = await _first_watch_message(channel, target, metadata)
    assert message.snapshot.request_metrics.success_total == 250


# -- rotation ------------------------------------------------------------------------------------


def _rewrite(path: Path, text: str | None) -> None:
    """Replace the token file's contents (None: delete it), as an operator rotating it would."""
    if text is None:
        path.unlink()
    else:
        path.write_text(text)


async def _collect_code(channel: grpc.aio.Channel, target: str, token: str) -> grpc.StatusCode:
    stub = collector_pb2_grpc.CollectorServiceStub(channel)
    try:
        await stub.Collect(_collect(target), metadata=_bearer(token), timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_reloaded_tokens_replace_the_old_ones(
    server: CollectorServer,
    channel: grpc.aio.Channel,
    token_file: Path,
    target: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    new_token = f"tok-{secrets.token_urlsafe(24)}"
    watch = collector_pb2_grpc.CollectorServiceStub(channel).Watch(
        _watch(target), metadata=_bearer(TOKEN)
    )
    try:
        assert (await asyncio.wait_for(watch.read(), 10)).HasField("snapshot")
        _rewrite(token_file, f"{new_token}\n")
        with caplog.at_level(logging.INFO, logger="tgi_collector.server"):
            assert server.reload_tokens()
        assert "reloaded 1 token(s)" in caplog.text
        assert await _collect_code(channel, target, new_token) == grpc.StatusCode.OK
        assert await _collect_code(channel, target, TOKEN) == UNAUTHENTICATED
        assert await _collect_code(channel, target, OTHER_TOKEN) == UNAUTHENTICATED
        # A stream admitted before the rotation goes on.
        assert (await asyncio.wait_for(watch.read(), 10)).HasField("sync")
    finally:
        watch.cancel()
    assert new_token not in caplog.text


@pytest.mark.parametrize(
    "case",
    [("# nothing left\n", "holds no token"), ("two words\n", "printable ASCII"), (None, "cannot")],
    ids=["empty", "bad token", "missing"],
)
async def test_a_bad_reload_keeps_the_tokens_in_use(
    server: CollectorServer,
    channel: grpc.aio.Channel,
    target: str,
    caplog: pytest.LogCaptureFixture,
    case: tuple[str | None, str],
) -> None:
    text, problem = case
    assert server.config.token_file is not None
    _rewrite(Path(server.config.token_file), text)
    with caplog.at_level(logging.ERROR, logger="tgi_collector.server"):
        assert not server.reload_tokens()
    assert "token reload failed, the 2 token(s) loaded before stay in use" in caplog.text
    assert problem in caplog.text
    assert await _collect_code(channel, target, TOKEN) == grpc.StatusCode.OK
    assert await _collect_code(channel, target, OTHER_TOKEN) == grpc.StatusCode.OK


async def test_reload_without_a_token_file_changes_nothing(
    target: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with CollectorServer(_config()) as open_server:
        with caplog.at_level(logging.WARNING, logger="tgi_collector.server"):
            assert not open_server.reload_tokens()
        assert "no token file is configured" in caplog.text
        async with grpc.aio.insecure_channel(f"127.0.0.1:{open_server.port}") as opened:
            assert await _collect_code(opened, target, "anything") == grpc.StatusCode.OK


async def test_sighup_reloads_the_tokens_of_a_serve_process(
    tmp_path: Path, target: str, unused_port: int
) -> None:
    """A real ``tgi-collector serve``: rotate the file, SIGHUP, and only the new token works."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\n")
    tokens.chmod(0o600)
    address = f"127.0.0.1:{unused_port}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tgi_collector", "serve", "--listen", address,
        "--grace", "0.5", "--token-file", str(tokens),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with grpc.aio.insecure_channel(address) as opened:
            await asyncio.wait_for(opened.channel_ready(), 20)
            assert await _collect_code(opened, target, TOKEN) == grpc.StatusCode.OK
            new_token = f"tok-{secrets.token_urlsafe(24)}"
            _rewrite(tokens, f"{new_token}\n")
            process.send_signal(signal.SIGHUP)
            codes: tuple[grpc.StatusCode, grpc.StatusCode] | None = None
            for _ in range(100):  # the signal is handled on the server's loop: poll, bounded
                codes = (
                    await _collect_code(opened, target, new_token),
                    await _collect_code(opened, target, TOKEN),
                )
                if codes == (grpc.StatusCode.OK, UNAUTHENTICATED):
                    break
                await asyncio.sleep(0.1)
            assert codes == (grpc.StatusCode.OK, UNAUTHENTICATED)
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    log = stderr.decode()
    assert "reloaded 1 token(s)" in log
    assert TOKEN not in log and new_token not in log


async def test_health_and_reflection_need_no_token_by_default(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    response = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert "tgi_collector.v1.CollectorService" in await _list_services(channel, None)


async def test_health_and_reflection_need_the_token_when_configured(token_file: Path) -> None:
    config = _config(token_file=str(token_file), auth_health_and_reflection=True)
    async with (
        CollectorServer(config) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        _assert_refused(raised.value)
        # Health Watch is unary-stream, reflection stream-stream: each refused in its kind.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await health.Watch(health_pb2.HealthCheckRequest(), timeout=5).read()
        _assert_refused(raised.value)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _list_services(channel, None)
        _assert_refused(raised.value)

        response = await health.Check(health_pb2.HealthCheckRequest(), metadata=_bearer())
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        assert "grpc.health.v1.Health" in await _list_services(channel, _bearer())


async def test_unknown_method_is_unauthenticated_before_unimplemented(
    channel: grpc.aio.Channel,
) -> None:
    method = channel.unary_unary("/tgi_collector.v1.CollectorService/NoSuchMethod")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await method(b"", timeout=5)
    _assert_refused(raised.value)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await method(b"", metadata=_bearer(), timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_tokens_never_reach_logs_or_messages(
    token_file: Path, target: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    details: list[str] = []
    async with (
        CollectorServer(_config(token_file=str(token_file))) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = collector_pb2_grpc.CollectorServiceStub(channel)
        for _, metadata in _REFUSED_METADATA:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Collect(_collect(target), metadata=metadata, timeout=10)
            details.append(raised.value.details() or "")
            details.append(raised.value.debug_error_string() or "")
        await stub.Collect(_collect(target), metadata=_bearer(), timeout=10)
        await _first_watch_message(channel, target, _bearer(OTHER_TOKEN))
        # A bad request with a good token: its message is about the request only.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Collect(_collect("ftp://x/"), metadata=_bearer(), timeout=10)
        details.append(raised.value.details() or "")
    assert caplog.records, "nothing was logged: the check below would prove nothing"
    assert "2 token(s) loaded" in caplog.text
    assert "refused /tgi_collector.v1.CollectorService/Collect from ipv4:127.0.0.1" in caplog.text
    for secret in TOKENS:
        assert secret not in caplog.text
        assert all(secret not in record.getMessage() for record in caplog.records)
        assert all(secret not in text for text in details)


async def test_client_token_option(server: CollectorServer, target: str) -> None:
    address = f"127.0.0.1:{server.port}"
    async with CollectorClient(address, token=TOKEN) as client:
        snapshot = await client.collect(target)
        assert snapshot.request_metrics.success_total == 250
        assert await client.health() == "SERVING"
        async for message in client.watch([target]):
            assert message.HasField("snapshot")
            break
    async with CollectorClient(address, token="wrong") as client:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.collect(target)
        _assert_refused(raised.value)
        # UNAUTHENTICATED is not retried: asking again would get the same answer.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in client.watch([target]):
                pass
        _assert_refused(raised.value)


async def test_client_refuses_half_a_client_certificate() -> None:
    with pytest.raises(ValueError, match="certificate_chain and private_key"):
        CollectorClient("127.0.0.1:1", certificate_chain=b"x")
    with pytest.raises(ValueError, match="token"):
        CollectorClient("127.0.0.1:1", token="two words")


# -- TLS -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"tls_cert_file": "c.pem"}, "tls_cert_file is set but tls_key_file is not"),
        ({"tls_key_file": "k.pem"}, "tls_key_file is set but tls_cert_file is not"),
        ({"tls_client_ca_file": "ca.pem"}, "tls_client_ca_file is set but tls_cert_file"),
        (
            {"tls_client_ca_file": "ca.pem", "tls_key_file": "k.pem"},
            "tls_key_file is set but tls_cert_file is not",
        ),
    ],
)
def test_incomplete_tls_settings_fail_at_construction(files: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CollectorServer(_config(**files))


def test_unreadable_or_non_pem_tls_files_fail_at_construction(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(OSError, match=f"cannot read tls_cert_file {missing}"):
        CollectorServer(_config(tls_cert_file=str(missing), tls_key_file=str(pki.server_key)))
    with pytest.raises(ValueError, match=f"tls_key_file {pki.server_cert} holds no PEM private"):
        CollectorServer(
            _config(tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_cert))
        )
    with pytest.raises(ValueError, match=f"tls_client_ca_file {pki.server_key} holds no PEM"):
        CollectorServer(
            _config(
                tls_cert_file=str(pki.server_cert),
                tls_key_file=str(pki.server_key),
                tls_client_ca_file=str(pki.server_key),
            )
        )


def _tls_config(pki: Pki, *, mutual: bool = False, **overrides: Any) -> ServerConfig:
    return _config(
        tls_cert_file=str(pki.server_cert),
        tls_key_file=str(pki.server_key),
        tls_client_ca_file=str(pki.ca) if mutual else None,
        **overrides,
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_tls(pki: Pki, target: str, host: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tgi_collector.server")
    async with CollectorServer(_tls_config(pki)) as server:
        address = f"{host}:{server.port}"
        async with CollectorClient(address, root_certificates=pki.read("ca")) as client:
            assert await client.health() == "SERVING"
            snapshot = await client.collect(target)
            assert snapshot.request_metrics.success_total == 250
        # A plaintext client cannot talk to a TLS port.
        async with CollectorClient(address) as client:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await client.health(timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        # Nor can a client that trusts another CA.
        async with CollectorClient(address, root_certificates=pki.read("other_ca")) as client:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await client.health(timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "; TLS; no bearer token required" in caplog.text


async def test_mutual_tls(pki: Pki, target: str) -> None:
    async with CollectorServer(_tls_config(pki, mutual=True)) as server:
        address = f"127.0.0.1:{server.port}"
        async with CollectorClient(address, root_certificates=pki.read("ca")) as client:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await client.health(timeout=5)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        async with CollectorClient(
            address,
            root_certificates=pki.read("ca"),
            certificate_chain=pki.read("client_cert"),
            private_key=pki.read("client_key"),
        ) as client:
            assert await client.health() == "SERVING"
            snapshot = await client.collect(target)
            assert snapshot.request_metrics.success_total == 250


async def test_tls_with_token(pki: Pki, token_file: Path, target: str) -> None:
    async with CollectorServer(_tls_config(pki, token_file=str(token_file))) as server:
        address = f"127.0.0.1:{server.port}"
        async with CollectorClient(address, root_certificates=pki.read("ca"), token=TOKEN) as c:
            assert (await c.collect(target)).request_metrics.success_total == 250
        async with CollectorClient(address, root_certificates=pki.read("ca")) as client:
            assert await client.health() == "SERVING"  # exempt by default
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await client.collect(target)
            _assert_refused(raised.value)


async def test_plaintext_token_on_a_public_address_warns(
    token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tgi_collector.server")
    async with CollectorServer(_config(token_file=str(token_file))):
        pass
    assert "tokens cross the network" not in caplog.text  # loopback: fine
    async with CollectorServer(_config(listen="0.0.0.0:0", token_file=str(token_file))):
        pass
    assert "tokens cross the network in the clear" in caplog.text


# -- grpcurl with TLS and a token (the README's commands) ----------------------------------------


async def test_grpcurl_with_tls_and_token(pki: Pki, token_file: Path, target: str) -> None:
    request = json.dumps({"target": {"instance_id": "tgi-a", "endpoint": target}})
    method = "tgi_collector.v1.CollectorService/Collect"
    async with CollectorServer(_tls_config(pki, token_file=str(token_file))) as server:
        address = f"localhost:{server.port}"
        ca = str(pki.ca)
        code, out, err = await run_grpcurl(
            "-cacert", ca, "-H", f"authorization: Bearer {TOKEN}", "-d", request, address, method
        )
        assert code == 0, err
        assert json.loads(out)["snapshot"]["request_metrics"]["success_total"] == 250

        code, out, err = await run_grpcurl("-cacert", ca, "-d", request, address, method)
        assert code != 0
        assert "Unauthenticated" in err
        assert UNAUTHENTICATED_MESSAGE in err

        # Reflection and health need no token by default: list and describe work.
        code, out, err = await run_grpcurl("-cacert", ca, address, "list")
        assert code == 0, err
        assert "tgi_collector.v1.CollectorService" in out.split()
        code, out, err = await run_grpcurl("-cacert", ca, address, "grpc.health.v1.Health/Check")
        assert code == 0, err

        # Plaintext to a TLS port, or without the CA: refused before any call.
        code, _, err = await run_grpcurl("-plaintext", address, "list")
        assert code != 0
        code, _, err = await run_grpcurl(address, "list")
        assert code != 0
        assert "certificate" in err


async def test_grpcurl_with_mutual_tls(pki: Pki, token_file: Path, target: str) -> None:
    config = _tls_config(
        pki, mutual=True, token_file=str(token_file), auth_health_and_reflection=True
    )
    async with CollectorServer(config) as server:
        address = f"localhost:{server.port}"
        tls = ["-cacert", str(pki.ca), "-cert", str(pki.client_cert), "-key", str(pki.client_key)]
        bearer = ["-H", f"authorization: Bearer {TOKEN}"]
        code, out, err = await run_grpcurl(*tls, *bearer, address, "list")
        assert code == 0, err
        assert "tgi_collector.v1.CollectorService" in out.split()
        request = json.dumps({"target": {"endpoint": target}})
        code, out, err = await run_grpcurl(
            *tls, *bearer, "-d", request, address, "tgi_collector.v1.CollectorService/Collect"
        )
        assert code == 0, err
        # With health and reflection behind the token, list needs it too.
        code, _, err = await run_grpcurl(*tls, address, "list")
        assert code != 0
        assert "Unauthenticated" in err
        # No client certificate: the handshake fails.
        code, _, err = await run_grpcurl("-cacert", str(pki.ca), *bearer, address, "list")
        assert code != 0


async def test_cli_health_over_tls_with_a_token(
    pki: Pki, token_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``tgi-collector health`` reaches a TLS collector that wants a token for health too."""
    from tgi_collector.cli import main  # noqa: PLC0415 - the CLI, as a user runs it

    config = _config(
        token_file=str(token_file),
        auth_health_and_reflection=True,
        tls_cert_file=str(pki.server_cert),
        tls_key_file=str(pki.server_key),
    )
    async with CollectorServer(config) as server:
        address = f"localhost:{server.port}"
        base = ["health", "--server", address, "--timeout", "5", "--cacert", str(pki.ca)]
        assert await asyncio.to_thread(main, [*base, "--token-file", str(token_file)]) == 0
        assert capsys.readouterr().out.strip() == f"{address}: SERVING"
        # The same without the token: refused with the one message, and the exit code says so.
        assert await asyncio.to_thread(main, base) == 1
        assert "UNAUTHENTICATED: missing or invalid bearer token" in capsys.readouterr().err
        # A wrong token file: refused too; the token never shows in the output.
        wrong = tmp_path / "wrong"
        wrong.write_text("not-the-token\n")
        assert await asyncio.to_thread(main, [*base, "--token-file", str(wrong)]) == 1
        captured = capsys.readouterr()
        assert "not-the-token" not in captured.out + captured.err
