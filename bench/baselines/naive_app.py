"""Baseline (a): the naive flask-sock fan-out a user would write first.

Each client is a flask-sock handler parked in ``ws.receive()``; one greenlet
relays every message from the Redis channel with ``ws.send`` to each client
in turn. simple-websocket accepts permessage-deflate when offered, so each
send is compressed per client. Run with Gunicorn's gevent worker, like ours:

    REDIS_URL=... gunicorn -k gevent -w 1 -b 127.0.0.1:PORT bench.baselines.naive_app:app
"""

from __future__ import annotations

import os

import gevent
import redis
from flask import Flask
from flask_sock import Sock

CHANNEL = os.environ.get("BENCH_CHANNEL", "websocket:updates")

app = Flask(__name__)
sock = Sock(app)
clients: set = set()
state = {"latest": None}


@sock.route("/ws")
def ws_route(ws) -> None:
    clients.add(ws)
    try:
        if state["latest"] is not None:
            ws.send(state["latest"])
        while True:
            ws.receive()
    finally:
        clients.discard(ws)


def relay() -> None:
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)
    for message in pubsub.listen():
        text = message["data"].decode()
        state["latest"] = text
        for ws in list(clients):
            try:
                ws.send(text)
            except Exception:  # noqa: BLE001 - a closed client; the handler cleans up
                clients.discard(ws)


gevent.spawn(relay)
