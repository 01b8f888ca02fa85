"""The original service's real users, as they are, against a deployment with ``ORIGINAL_COMPAT=on``.

* Its pages (Web-server-Report's market-indicators.js and
  websocket-manager.js) connect cross-origin, send the text ``ping`` and
  ``{"type": "ping"}`` every 30 s and ``{"type": "request_market_data"}``
  every 2 minutes, and read the flat fields of ``dashboard_update`` frames.
  Here they do so for three minutes with the intervals shortened (a ping a
  second, a request every four), beside a client of the project's own
  protocol on the same instance, so each field can be checked against what
  that protocol sends at the same time. The three minutes run beside the
  rest of the suite (tests/support/background.py).
* Its main web service reads ``latest_market_data`` and else the newest
  entry of ``market_data_stream`` (field ``data``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import pytest
import redis
import requests
import websocket

from feed.redisconn.embedded import RedisProcess
from feed.simulator.process import SimProcess
from lab.clients import RecordingClient
from tests.test_service import connect, metric, start_instances

PAGE_ORIGIN = "https://web-server-report.example"
SEVEN = ("btc", "eth", "sol", "xrp", "ada", "link", "bnb")
# Every field the original's pages read (ui-updaters.js, market-indicators.js).
NUMERIC = ("market_cap_usd", "volume_24h_usd", "market_cap_change_percentage_24h_usd",
           "btc_market_cap_percentage", "eth_market_cap_percentage", "fng_value", "btc_rsi_14",
           *(f"{c}_price_usd" for c in SEVEN), *(f"{c}_change_24h" for c in SEVEN))
DURATION = float(os.environ.get("ORIGINAL_PAGES_SECONDS", "180"))
PING_EVERY, REQUEST_EVERY = 1.0, 4.0


@dataclass
class PagesRun:
    pages: list[RecordingClient] = field(default_factory=list)
    own: list[RecordingClient] = field(default_factory=list)
    sent: int = 0
    seconds: float = 0.0
    bad_messages: float = 0.0
    latest: dict | None = None
    newest: dict | None = None
    stream_len: int = 0
    page_data_at_end: dict | None = None


def _act_as_pages(pages: list[RecordingClient], stop: threading.Event, run: PagesRun) -> None:
    """Each page's schedule: market-indicators.js on the first, websocket-manager.js on the second."""
    pages[0].send("ping")
    pages[0].send(json.dumps({"type": "request_dashboard_data", "timestamp": int(time.time() * 1000)}))
    pages[1].send(json.dumps({"type": "request_market_data"}))
    run.sent += 3
    t0 = time.monotonic()
    next_request = t0 + REQUEST_EVERY
    while not stop.is_set() and time.monotonic() - t0 < DURATION:
        stop.wait(PING_EVERY)
        pages[0].send("ping")
        pages[1].send(json.dumps({"type": "ping"}))
        run.sent += 2
        if time.monotonic() >= next_request:
            next_request += REQUEST_EVERY
            for page in pages:
                page.send(json.dumps({"type": "request_market_data"}))
                run.sent += 1
    run.seconds = time.monotonic() - t0


def background_original_pages(stop: threading.Event) -> PagesRun:
    run = PagesRun()
    workdir = tempfile.mkdtemp(prefix="original-pages-")
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        redis_proc = RedisProcess(port=0, workdir=workdir).start()
        stack.callback(redis_proc.close)
        sim = SimProcess().start()
        stack.callback(sim.stop)
        # One worker each: a leader's instance and a follower's; every one sends.
        instances = start_instances(stack, 2, redis_proc.url, sim.url, workers=1, ORIGINAL_COMPAT="on",
                                    ALLOWED_ORIGINS=PAGE_ORIGIN, FETCH_INTERVAL_SECONDS="1")
        for i, inst in enumerate(instances):
            run.pages.append(connect(stack, inst.ws_url, f"page{i}", headers=[f"Origin: {PAGE_ORIGIN}"]))
            run.own.append(connect(stack, inst.ws_url + "?protocol=marketfeed", f"own{i}"))
        _act_as_pages(run.pages, stop, run)
        time.sleep(1.5)  # the replies to the last messages
        run.bad_messages = sum(sum(v for _, v in metric(inst.get("/metrics").text,
                                                       "marketfeed_ws_bad_messages_total"))
                               for inst in instances)
        client = redis.Redis.from_url(redis_proc.url)
        latest, newest = client.get("latest_market_data"), client.xrevrange("market_data_stream", count=1)
        run.latest = json.loads(latest) if latest else None
        run.newest = json.loads(newest[0][1][b"data"]) if newest else None
        run.stream_len = client.xlen("market_data_stream")
        client.close()
    return run


def updates(client: RecordingClient) -> list[dict]:
    return [r.msg for r in client.messages if r.msg.get("type") == "dashboard_update"]


@pytest.mark.timeout(900)
@pytest.mark.background("original_pages")
def test_the_original_pages_get_every_field_and_are_never_closed(background: PagesRun) -> None:
    run = background
    assert run.seconds >= DURATION - 1
    assert run.sent >= 2 * DURATION / PING_EVERY
    for page, own in zip(run.pages, run.own, strict=True):
        # Never closed, never counted as a bad client.
        assert page.close_code is None and not page.disconnects, (page.close_code, page.close_reason)
        got = updates(page)
        assert len(got) >= DURATION / 2, f"{page.name}: {len(got)} updates in {DURATION} s"
        for msg in got:
            assert msg["source"] == "simulated" and msg["data"]["simulated"] is True
            missing = [f for f in NUMERIC if not isinstance(msg["data"].get(f), (int, float))]
            assert not missing, f"{page.name} lacks {missing}"
            assert isinstance(msg["data"]["us_stock_indices"], dict)
        # Each price is what the project's own protocol sent for the same fetch.
        ours = {s["fetched_at"]: s["data"]["prices"] for s in own.snapshots()}
        compared = 0
        for msg in got:
            prices = ours.get(msg["data"]["last_updated"])
            if prices is None:
                continue
            for coin in SEVEN:
                assert msg["data"][f"{coin}_price_usd"] == prices[coin.upper()]["usd"]
                assert msg["data"][f"{coin}_change_24h"] == prices[coin.upper()]["change_24h"]
            compared += 1
        assert compared >= len(got) * 0.9, f"{page.name}: only {compared} of {len(got)} matched"
        # Every ping answered (pong), every request answered with the data.
        pongs = [r for r in page.messages if r.msg.get("type") == "pong"]
        assert len(pongs) >= DURATION / PING_EVERY * 0.9
    assert run.bad_messages == 0
    # The original's main service reads the same flat object from Redis.
    assert run.latest is not None or run.newest is not None
    for flat in (run.latest, run.newest):
        if flat is not None:
            assert not [f for f in NUMERIC if not isinstance(flat.get(f), (int, float))]
    assert 0 < run.stream_len <= 1100


def test_a_refused_page_origin_is_logged_once_with_the_setting(stack, redis_proc, sim) -> None:
    (inst,) = start_instances(stack, 1, redis_proc.url, sim.url, workers=1, ORIGINAL_COMPAT="on")
    for _ in range(3):
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(inst.ws_url, origin=PAGE_ORIGIN, timeout=10)
        assert info.value.status_code == 403
    time.sleep(0.5)
    refused = inst.proc.events("origin_refused")
    assert len(refused) == 1
    assert refused[0]["origin"] == PAGE_ORIGIN and refused[0]["setting"] == "ALLOWED_ORIGINS"
    assert PAGE_ORIGIN in refused[0]["fix"]


def test_a_client_picks_its_protocol_and_a_bad_one_is_refused(stack, redis_proc, sim) -> None:
    (inst,) = start_instances(stack, 1, redis_proc.url, sim.url, workers=1)
    # The project's protocol by default; the original's on request.
    own = connect(stack, inst.ws_url, "own")
    page = connect(stack, inst.ws_url + "?protocol=original", "page")
    own.wait_snapshots(1)
    page.wait(lambda c: updates(c), 10, what="a dashboard_update")
    assert own.snapshots()[0]["type"] == "snapshot"
    bad = requests.get(inst.url + "/ws?protocol=socketio", timeout=5, headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert bad.status_code == 400
    assert bad.json()["error"] == "unknown_protocol" and "original" in bad.json()["message"]
