"""The WebSocket side: who may connect, the takeover, the hub and the fan-out.

:mod:`~feed.ws.access` checks a request before the handshake;
:mod:`~feed.ws.takeover` is the one place that knows flask-sock and
simple-websocket; :mod:`~feed.ws.connection` drives one client's socket from
the event loop; :mod:`~feed.ws.hub` keeps the registry and the policy (slow
clients, limits, sweeps); :mod:`~feed.ws.broadcast` writes one frame to many
connections; :mod:`~feed.ws.frames` encodes frames once;
:mod:`~feed.ws.protocol` is the client protocol (commands, close codes).
"""
