"""The one observer interface: the service's metrics and the quiet default implement all of it, as called."""

from __future__ import annotations

import inspect

import pytest

from feed.observer import Observer, Quiet, notify
from feed.server.metrics import Metrics

EVENTS = sorted(n for n, v in vars(Observer).items() if inspect.isfunction(v) and not n.startswith("_"))


@pytest.mark.parametrize("cls", [Quiet, Metrics])
def test_every_event_is_implemented_with_the_interface_s_signature(cls: type) -> None:
    assert EVENTS, "the interface declares its events"
    for name in EVENTS:
        assert inspect.signature(getattr(cls, name)) == inspect.signature(getattr(Observer, name)), name


def test_metrics_count_what_they_are_told() -> None:
    m = Metrics("node-x")
    m.elected("node-x", 5, "presence_lost")
    m.fetched(False, 0.2)
    m.broadcast(10, 2, 1795698000.0, 0.004)
    m.bad_message("invalid_json")
    text = m.render().decode()
    assert 'marketfeed_leadership_changes_total{change="took_over",node="node-x"} 1.0' in text
    assert 'marketfeed_fetches_total{outcome="error"} 1.0' in text
    assert 'marketfeed_ws_messages_sent_total{kind="snapshot"} 10.0' in text
    assert "marketfeed_ws_snapshots_superseded_total 2.0" in text
    assert 'marketfeed_ws_bad_messages_total{error="invalid_json"} 1.0' in text
    assert 'marketfeed_leader{node="node-x"} 1.0' in text


def test_an_observer_that_raises_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise RuntimeError("metrics backend down")

    notify(broken, "broadcast")
    assert any(getattr(r, "fields", {}).get("event") == "observer_error" for r in caplog.records)
