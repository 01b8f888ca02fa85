"""Baseline (c): Flask-SocketIO with its Redis message queue.

The usual way to fan out across processes with Flask: every worker joins the
Redis message queue, and an emit from any process (the benchmark publishes
with ``SocketIO(message_queue=...).emit``) reaches every worker's clients.
Clients speak Socket.IO v5 over Engine.IO v4, WebSocket transport.

    REDIS_URL=... gunicorn -k gevent -w 1 -b 127.0.0.1:PORT bench.baselines.socketio_app:app
"""

from __future__ import annotations

import os

from flask import Flask
from flask_socketio import SocketIO

CHANNEL = os.environ.get("BENCH_CHANNEL", "bench-socketio")

app = Flask(__name__)
socketio = SocketIO(app, message_queue=os.environ["REDIS_URL"], channel=CHANNEL,
                    async_mode="gevent", cors_allowed_origins="*")
