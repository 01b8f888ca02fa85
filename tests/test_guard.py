"""The request guard and the operator endpoints through Flask's test client.

No server, no Redis round trip: the checks run before anything touches a
socket, so a route change can be checked in milliseconds. The same answers
over real sockets are in tests/test_probes.py and tests/test_exposure.py.
"""

from __future__ import annotations

import base64
import os

import pytest

from app import create_app
from feed.config.settings import Settings
from feed.ws.access import check_access, client_address

OPERATOR = "op-token-for-tests"
WS = "ws-token-for-tests"


def settings(**kw: object) -> Settings:
    # A Redis nobody listens on: the client is created, never used here.
    return Settings.from_env({}, redis_url="redis://127.0.0.1:9/0", sim_url="http://127.0.0.1:9", **kw)


def upgrade(**headers: str) -> dict[str, str]:
    base = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    base.update(headers)
    return {k: v for k, v in base.items() if v}


@pytest.fixture
def client():
    return create_app({"SETTINGS": settings(ws_token=WS, operator_token=OPERATOR,
                                            allowed_origins=("https://dash.example.com",))}).test_client()


def test_ws_needs_an_upgrade(client) -> None:
    r = client.get("/ws")
    assert r.status_code == 426 and r.json["error"] == "websocket_required"


@pytest.mark.parametrize(("headers", "status", "reason"), [
    ({"Sec-WebSocket-Key": ""}, 400, "handshake"),
    ({"Sec-WebSocket-Key": "bm90IDE2IGJ5dGVz"}, 400, "handshake"),
    ({"Connection": "keep-alive"}, 400, "handshake"),
    ({"Sec-WebSocket-Version": "8"}, 426, "version"),
    ({"Origin": "https://evil.example.net"}, 403, "origin"),
    ({}, 401, "token"),
])
def test_refusals_before_the_handshake(client, headers, status, reason) -> None:
    r = client.get(f"/ws?token={WS}" if reason != "token" else "/ws", headers=upgrade(**headers))
    assert r.status_code == status and r.json["error"] == reason
    if status == 426:
        assert r.headers["Sec-WebSocket-Version"] == "13"


def test_operator_endpoints(client) -> None:
    for path in ("/status", "/metrics"):
        r = client.get(path)
        assert r.status_code == 401 and "Bearer" in r.headers["WWW-Authenticate"]
        assert client.get(path, headers={"Authorization": "Bearer nope-nope-nope"}).status_code == 401
        # The token in a query string is not accepted: it would end up in logs.
        assert client.get(f"{path}?token={OPERATOR}").status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {OPERATOR}"}).status_code == 200
    assert client.get("/health").json == {"status": "ok"}
    full = client.get("/health", headers={"Authorization": f"Bearer {OPERATOR}"}).json
    assert full["status"] == "ok" and "node" in full and "redis" in full


def test_without_an_operator_token_everything_is_open() -> None:
    c = create_app({"SETTINGS": settings()}).test_client()
    assert "node" in c.get("/health").json
    assert c.get("/metrics").status_code == 200


def test_node_labels_in_frames() -> None:
    from feed.server.service import FeedService

    assert FeedService(settings()).label is None
    assert FeedService(settings(operator_token=OPERATOR)).label is not None
    assert FeedService(settings(operator_token=OPERATOR, ws_node_ids="full")).label is None
    hidden = FeedService(settings(ws_node_ids="opaque"))
    assert hidden.label is not None and hidden.label("ws-a-1-ab") == hidden.label("ws-a-1-ab")
    assert hidden.label("ws-a-1-ab") != hidden.label("ws-a-2-ab")


def test_forwarded_headers_only_from_trusted_proxies() -> None:
    environ = {"HTTP_ORIGIN": "https://public.example", "HTTP_HOST": "10.0.0.5:8080",
               "HTTP_X_FORWARDED_HOST": "public.example", "HTTP_X_FORWARDED_FOR": "1.2.3.4, 5.6.7.8"}
    proxy = {**environ, "REMOTE_ADDR": "10.1.2.3"}
    stranger = {**environ, "REMOTE_ADDR": "192.0.2.7"}
    trusting = settings(forwarded_allow_ips=("10.0.0.0/8",))
    assert check_access(proxy, trusting).ok
    assert check_access(stranger, trusting).status == 403
    assert check_access(stranger, settings(forwarded_allow_ips=("*",))).ok
    # The address our proxy appended is the client's; earlier ones are claims.
    assert client_address(proxy, trusting) == "5.6.7.8"
    assert client_address(stranger, trusting) == "192.0.2.7"


@pytest.mark.parametrize("token", ["short", "has space in it"])
def test_weak_tokens_are_refused_at_start_up(token: str) -> None:
    from feed.errors import ConfigError

    for var in ("WS_TOKEN", "OPERATOR_TOKEN"):
        with pytest.raises(ConfigError, match=var):
            Settings.from_env({var: token})
