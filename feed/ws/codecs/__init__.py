"""Wire codecs: one module per client protocol, each turning snapshots into frames and text into commands.

A connection is given its codec at the handshake; the hub encodes each
snapshot once per codec in use, never per client. The project's own
protocol is :mod:`~feed.ws.codecs.marketfeed` (docs/PROTOCOL.md); a second
protocol is a second module beside it, with no branch in the hub. The
interface is :class:`~feed.ws.codecs.base.Codec`.

Nothing is imported here.
"""
