"""Golden frames: what the project's codec writes, byte for byte, and what it accepts.

tests/fixtures/frames/marketfeed.json holds the payloads as the hub wrote
them before the codec existed; a change to any of them is a change of the
wire protocol (docs/PROTOCOL.md), for every client, and must be made on
purpose.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feed.envelope import Envelope, EnvelopeError
from feed.ws.codecs.base import View
from feed.ws.codecs.marketfeed import CODEC
from feed.ws.protocol import Command, CommandError

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "frames" / "marketfeed.json").read_text())
ENV = Envelope.from_json(GOLDEN["envelope"])


def payload(frame: bytes) -> str:
    """The text of one unmasked server frame (FIN + text opcode, 7/16/64-bit length)."""
    assert frame[0] == 0x81, "a complete text frame"
    n, at = frame[1], 2
    if n == 126:
        n, at = int.from_bytes(frame[2:4], "big"), 4
    elif n == 127:
        n, at = int.from_bytes(frame[2:10], "big"), 10
    assert len(frame) == at + n, "exactly one frame"
    return frame[at:].decode()


def test_the_envelope_round_trips_as_stored() -> None:
    assert ENV.to_json() == GOLDEN["envelope"]


def test_snapshot_frames() -> None:
    assert payload(CODEC.snapshot(ENV, View("ws-r2-4250-1a2b", ENV.leader, False))) == GOLDEN["snapshot"]
    # Opaque labels and a stale snapshot: the leader's and this worker's labels, stale true.
    assert payload(CODEC.snapshot(ENV, View("n-7f3a", "n-1c2d", True))) == GOLDEN["snapshot_stale_labelled"]


def test_notices_and_replies() -> None:
    assert payload(CODEC.stale_notice(ENV, "ws-r2-4250-1a2b", 16.04)) == GOLDEN["stale"]
    assert payload(CODEC.pong(7, 1795698001.5, "ws-r2-4250-1a2b")) == GOLDEN["pong"]
    status = {"node": "ws-r2-4250-1a2b", "role": "follower", "clients_on_this_worker": 3}
    assert payload(CODEC.status("s1", status)) == GOLDEN["status"]
    assert payload(CODEC.no_snapshot(None)) == GOLDEN["no_snapshot"]
    exc = CommandError("unknown_command", "unknown op 'subscribe'; known: ping, snapshot, status", 3)
    assert payload(CODEC.error(exc)) == GOLDEN["error_unknown"]


def test_a_large_snapshot_is_one_frame_with_a_long_length() -> None:
    big = Envelope(ENV.epoch, ENV.seq, ENV.leader, ENV.fetched_at, {"pad": "x" * 70_000})
    text = payload(CODEC.snapshot(big, View("w", "l", False)))
    assert json.loads(text)["data"]["pad"] == "x" * 70_000


@pytest.mark.parametrize(("text", "command"), [
    ('{"op":"ping"}', Command("ping")),
    ('{"op":"ping","id":1}', Command("ping", 1)),
    ('{"op":"snapshot","id":"a"}', Command("snapshot", "a")),
    ('{"op":"status"}', Command("status")),
])
def test_commands_parse(text: str, command: Command) -> None:
    assert CODEC.parse(text) == command


@pytest.mark.parametrize(("text", "code"), [
    ("hello", "invalid_json"),
    ("[1]", "invalid_command"),
    ('{"id": 1}', "invalid_command"),
    ('{"op": "subscribe"}', "unknown_command"),
    ('{"op": "ping", "extra": 1}', "invalid_command"),
    ('{"op": "ping", "id": true}', "invalid_command"),
    ('{"op": "ping", "id": "' + "x" * 65 + '"}', "invalid_command"),
    # Nested past the parser's recursion limit, inside WS_MAX_MESSAGE_BYTES: an error, not a crash.
    ("[" * 4000, "invalid_json"),
    ('{"type": ' + "[" * 4000, "invalid_json"),
])
def test_bad_messages_are_refused_with_a_code(text: str, code: str) -> None:
    with pytest.raises(CommandError) as info:
        CODEC.parse(text)
    assert info.value.code == code


def test_publish_time_travels_beside_the_fetch_time() -> None:
    env = Envelope(ENV.epoch, ENV.seq, ENV.leader, ENV.fetched_at, ENV.data,
                   published_at=ENV.fetched_at + 0.25)
    stored = env.to_json()
    assert Envelope.from_json(stored) == env
    sent = json.loads(payload(CODEC.snapshot(env, View("w", "l", False))))
    assert list(sent)[:8] == ["type", "epoch", "seq", "leader", "served_by", "fetched_at", "published_at",
                              "stale"]
    assert sent["published_at"] == "2026-11-26T13:00:00.373Z"
    # A number where a time belongs (a foreign publisher) is refused, not a crash.
    for field in ("published_at", "fetched_at"):
        bad = json.loads(stored)
        bad[field] = 5
        with pytest.raises(EnvelopeError):
            Envelope.from_json(json.dumps(bad))
