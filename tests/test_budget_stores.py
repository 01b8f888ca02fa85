"""Both budget stores, memory (no election) and Redis (under the fence), through the same scenarios.

encode/broadcaster's rule: an in-memory twin sits beside the Redis backend,
and the tests prove both behave the same. What differs is the fence, which
only the Redis store has; its scenario is the last one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from feed.election.term import Term
from feed.keys import Keys
from feed.providers.budget import Block, Budget, BudgetStore, MemoryBudgetStore, RedisBudgetStore

KEYS = Keys()
NOW = 1_796_000_000.0  # a fixed wall time, so every scenario sees the same count windows
TERM = Term("node-a", 41)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[BudgetStore]:
    if request.param == "memory":
        yield MemoryBudgetStore()
        return
    client: redis.Redis = request.getfixturevalue("rclient")
    # The fence checks the lock and the epoch: this term holds both.
    client.set(KEYS.leader, TERM.node_id)
    client.set(KEYS.epoch, TERM.epoch)
    yield RedisBudgetStore(client, KEYS)


def budget(store: BudgetStore, clock: Callable[[], float] = lambda: NOW) -> Budget:
    b = Budget(store, clock)
    assert b.begin(TERM)
    return b


def test_a_new_store_is_empty(store: BudgetStore) -> None:
    state, counts = store.load(NOW)
    assert state == {}
    assert counts == {"minute": {}, "day": {}, "month": {}}


def test_what_one_term_saves_the_next_term_loads(store: BudgetStore) -> None:
    first = budget(store)
    block = Block(until=NOW + 60, status=429, outcome="rate_limited", detail="slow down", base="http://x",
                  since=NOW, repeats=2)
    first.set_block("coingecko", block)
    first.set_next_due("binance.prices", NOW + 5)
    first.set_failures("coingecko.market", 3)
    first.put_json("symbols:binance", {"known": {"BTC": "BTCUSDT"}})
    first.count("binance", 2)
    first.count("coingecko")
    assert first.save()
    second = budget(store)
    assert second.block("coingecko") == block
    assert second.blocked("coingecko", "http://x") == block
    assert second.blocked("coingecko", "http://elsewhere") is None  # a block holds for its host only
    assert second.next_due("binance.prices") == NOW + 5
    assert second.failures("coingecko.market") == 3
    assert second.get_json("symbols:binance") == {"known": {"BTC": "BTCUSDT"}}
    assert second.calls("binance") == {"minute": 2, "day": 2, "month": 2}
    assert second.calls("coingecko") == {"minute": 1, "day": 1, "month": 1}


def test_deleted_fields_are_gone_and_counts_add_up(store: BudgetStore) -> None:
    b = budget(store)
    b.set_failures("binance.prices", 2)
    b.count("binance")
    assert b.save()
    b.set_failures("binance.prices", 0)  # zero is stored as no field
    b.count("binance", 3)
    assert b.save()
    state, counts = store.load(NOW)
    assert "fails:binance.prices" not in state
    assert counts["minute"] == counts["day"] == counts["month"] == {"binance": 4}


def test_a_new_minute_starts_from_zero_but_the_day_goes_on(store: BudgetStore) -> None:
    b = budget(store)
    b.count("feargreed")
    assert b.save()
    later = Budget(store, lambda: NOW + 120)
    assert later.begin(TERM)
    assert later.calls("feargreed") == {"minute": 0, "day": 1, "month": 1}


def test_nothing_to_save_is_a_successful_save(store: BudgetStore) -> None:
    assert budget(store).save()


def test_a_term_that_is_over_writes_nothing(rclient: redis.Redis) -> None:
    # The Redis store's alone: without an election (the memory store) every node keeps its own.
    rclient.set(KEYS.leader, TERM.node_id)
    rclient.set(KEYS.epoch, TERM.epoch)
    store = RedisBudgetStore(rclient, KEYS)
    b = budget(store)
    b.set_next_due("binance.prices", NOW + 5)
    assert b.save()
    stale = Budget(store, lambda: NOW)
    assert stale.begin(Term("node-a", 40))  # an older epoch of the same node
    stale.set_next_due("binance.prices", NOW + 500)
    stale.count("binance")
    assert not stale.save()  # the fence refused it: nothing written
    state, counts = store.load(NOW)
    assert state["next:binance.prices"] == str(int((NOW + 5) * 1000))
    assert counts["minute"] == {}
