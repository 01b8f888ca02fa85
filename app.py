"""The Flask app: the dashboard, the WebSocket and the operator endpoints.

    GET /         live dashboard
    GET /ws       the WebSocket (snapshots out, small JSON commands in);
                  ?protocol=original|marketfeed picks the wire protocol
    GET /health   liveness + this node's summary (JSON; never waits on Redis)
    GET /status   the cluster view from Redis + this worker's view
    GET /metrics  Prometheus text, aggregated across the Gunicorn workers

With ``OPERATOR_TOKEN`` set, ``/status`` and ``/metrics`` need
``Authorization: Bearer <token>`` and ``/health`` without it answers only
its status.

Run it with ``gunicorn -c gunicorn.conf.py`` (the config names the factory).
The service object is created here but started by Gunicorn's
``post_worker_init`` hook, once gevent has patched the worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request, send_from_directory
from flask_sock import Sock
from werkzeug.exceptions import HTTPException

from feed.config.settings import Settings
from feed.errors import ConfigError
from feed.server.service import FeedService
from feed.ws.access import RefusedOrigins, check_access, check_handshake, client_address, operator_allowed
from feed.ws.codecs.choice import choose
from feed.ws.protocol import CloseCode
from feed.ws.takeover import SERVER_OPTIONS, prepare_handshake, take_over

DASHBOARD = Path(__file__).resolve().parent / "feed" / "dashboard"


def create_app(test_config: Mapping[str, Any] | None = None, *, service: FeedService | None = None) -> Flask:
    """Build the app. ``test_config`` may carry ``SETTINGS`` (a Settings)."""
    app = Flask(__name__, static_folder=None)
    if test_config:
        app.config.update(test_config)
    settings: Settings = app.config.get("SETTINGS") or Settings.from_env()
    app.config["SETTINGS"] = settings
    if service is None:
        service = FeedService(settings)
    app.extensions["marketfeed"] = service
    # simple-websocket does the upgrade only (feed/ws/takeover.py).
    app.config["SOCK_SERVER_OPTIONS"] = dict(SERVER_OPTIONS)
    sock = Sock(app)
    register_routes(app, sock, service, settings)
    return app


def register_routes(app: Flask, sock: Sock, service: FeedService, settings: Settings) -> None:
    @app.before_request
    def guard_websocket() -> Any:
        if request.path != "/ws":
            return None
        if request.environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            return jsonify(error="websocket_required",
                           message="GET /ws is a WebSocket endpoint; connect with a WebSocket client"), 426
        for check in (check_handshake, lambda environ: check_access(environ, settings)):
            verdict = check(request.environ)
            if not verdict.ok:
                service.metrics.rejected.labels(verdict.reason).inc()
                if verdict.reason == "origin":
                    origin_refused(request.environ.get("HTTP_ORIGIN", ""))
                return (jsonify(error=verdict.reason, message=verdict.message), verdict.status,
                        verdict.headers)
        if service.stopping:
            return jsonify(error="stopping", message="this instance is shutting down; reconnect"), 503
        try:
            codec = choose(request.args.get("protocol"), service.hub.codec)
        except ValueError as exc:
            service.metrics.rejected.labels("protocol").inc()
            return jsonify(error="unknown_protocol", message=str(exc)), 400
        request.environ["marketfeed.codec"] = codec
        if service.hub.full:
            service.metrics.rejected.labels("full").inc()
            return jsonify(error="full", message="this worker has its maximum of clients; retry"), 503
        prepare_handshake(request.environ)
        return None

    refused_origins = RefusedOrigins()

    def origin_refused(origin: str) -> None:
        origin = origin.rstrip("/")[:200]
        if refused_origins.first(origin):
            app.logger.warning("origin refused", extra={"fields": {
                "event": "origin_refused", "node": service.node_id, "origin": origin,
                "setting": "ALLOWED_ORIGINS",
                "fix": f"add {origin} to ALLOWED_ORIGINS (comma-separated) to admit pages from it; "
                       "logged once per origin"}})

    @sock.route("/ws")
    def websocket(ws: Any) -> None:
        remote = client_address(request.environ, settings)
        try:
            service.hub.serve(take_over(ws, request.environ), remote, request.environ["marketfeed.codec"])
        except OSError as exc:
            # Out of descriptors or memory: refuse this one client cleanly
            # (1013, try again later) rather than answer an upgraded socket
            # with an HTTP 500.
            service.metrics.rejected.labels("resources").inc()
            app.logger.warning("cannot take a client: %s", exc, extra={"fields": {
                "event": "client_refused", "node": service.node_id, "error": str(exc)}})
            ws.close(reason=CloseCode.TRY_AGAIN_LATER, message="server busy, try again later")

    def operator_only() -> Any:
        if operator_allowed(request.environ, settings):
            return None
        return (jsonify(error="unauthorized", message="this endpoint needs Authorization: Bearer "
                                                      "<OPERATOR_TOKEN>"),
                401, {"WWW-Authenticate": 'Bearer realm="marketfeed operator"'})

    @app.get("/health")
    def health() -> Any:
        body = service.health()
        code = 503 if service.stopping else 200
        if not operator_allowed(request.environ, settings):
            # What a load balancer needs, nothing about the cluster's insides.
            return jsonify(status=body["status"]), code
        return jsonify(body), code

    @app.get("/status")
    def status() -> Any:
        if (refused := operator_only()) is not None:
            return refused
        try:
            events = max(1, min(200, int(request.args.get("events", "20"))))
        except ValueError:
            return jsonify(error="bad_request", message="events must be an integer"), 400
        body, ok = service.cluster_status(events)
        return jsonify(body), (200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> Any:
        from feed.server.metrics import CONTENT_TYPE_LATEST

        if (refused := operator_only()) is not None:
            return refused
        return Response(service.metrics.render(), mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                        headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.get("/")
    def dashboard() -> Any:
        return send_from_directory(DASHBOARD, "index.html", max_age=0)

    @app.get("/dashboard/<path:name>")
    def dashboard_asset(name: str) -> Any:
        # Revalidated on every load (a 304 when unchanged), so a deploy never
        # pairs a cached old script with a new page.
        return send_from_directory(DASHBOARD, name, max_age=0)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return jsonify(error=exc.name.lower().replace(" ", "_"), message=exc.description), exc.code

    @app.errorhandler(ConfigError)
    def config_error(exc: ConfigError) -> Any:
        return jsonify(error="config", message=str(exc)), 500
