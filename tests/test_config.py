"""Settings: the original names and defaults, and clear refusals of bad values."""

from __future__ import annotations

import pytest

from feed.config.settings import Settings, resolve_upstream, secret_values
from feed.errors import ConfigError
from feed.keys import Keys
from feed.redisconn.url import redact_url


def test_defaults_match_the_original_service() -> None:
    s = Settings.from_env({})
    assert s.fetch_interval == 5.0
    assert s.port == 8081  # the original's default
    assert s.lock_ttl == 10.0
    assert s.cache_ttl == 10.0
    assert s.keys.leader == "websocket:leader"
    assert s.keys.data == "websocket:snapshot"
    # The original's own names, bare, for its other consumers.
    assert (s.keys.original_latest, s.keys.original_stream) == ("latest_market_data", "market_data_stream")


def test_environment_names_are_the_original_ones() -> None:
    s = Settings.from_env({
        "REDIS_URL": "redis://example:6380/2",
        "FETCH_INTERVAL_SECONDS": "7.5",
        "PORT": "9000",
        "RAILWAY_REPLICA_ID": "abc",
    })
    assert (s.redis_url, s.fetch_interval, s.port, s.replica_id) == (
        "redis://example:6380/2", 7.5, 9000, "abc")


def test_one_prefix_renames_every_key() -> None:
    keys = Settings.from_env({"KEY_PREFIX": "staging"}).keys
    names = [keys.leader, keys.epoch, keys.data, keys.updates, keys.leader_events, keys.leadership_log,
             keys.original_latest, keys.original_stream]
    assert all(n.startswith("staging:") for n in names)
    assert len(set(names)) == len(names)
    default = Keys()
    assert not set(names) & {default.leader, default.epoch, default.data, default.updates,
                             default.leader_events, default.leadership_log}


@pytest.mark.parametrize(
    ("env", "setting", "words"),
    [
        ({"LOCK_TTL_SECONDS": "10", "RENEW_INTERVAL_SECONDS": "5"}, "LOCK_TTL_SECONDS", "2 x RENEW_INTERVAL"),
        ({"LOCK_TTL_SECONDS": "4", "RENEW_INTERVAL_SECONDS": "3"}, "LOCK_TTL_SECONDS", "2 x RENEW_INTERVAL"),
        ({"FETCH_INTERVAL_SECONDS": "-1"}, "FETCH_INTERVAL_SECONDS", "positive"),
        ({"FETCH_INTERVAL_SECONDS": "0"}, "FETCH_INTERVAL_SECONDS", "positive"),
        ({"FETCH_INTERVAL_SECONDS": "nan"}, "FETCH_INTERVAL_SECONDS", "positive"),
        ({"FETCH_INTERVAL_SECONDS": "soon"}, "FETCH_INTERVAL_SECONDS", "cannot parse"),
        ({"RENEW_INTERVAL_SECONDS": "-3"}, "RENEW_INTERVAL_SECONDS", "positive"),
        ({"LEASE_MARGIN_SECONDS": "8"}, "LEASE_MARGIN_SECONDS", "give up before"),
        ({"PORT": "70000"}, "PORT", "1-65535"),
        ({"PORT": "http"}, "PORT", "cannot parse"),
        ({"REDIS_URL": "http://localhost:6379"}, "REDIS_URL", "scheme"),
        ({"REDIS_URL": "redis://localhost:notaport"}, "REDIS_URL", "cannot parse"),
        ({"REDIS_URL": "redis://"}, "REDIS_URL", "host"),
        ({"REDIS_URL": "redis+sentinel://h1:26379"}, "REDIS_URL", "master"),
        ({"ELECTION": "maybe"}, "ELECTION", "cannot parse"),
        ({"PROVIDERS": "coingecko,yahoo"}, "PROVIDERS", "yahoo"),
        ({"SYMBOLS": "BTC,not a symbol"}, "SYMBOLS", "ticker"),
        ({"UPSTREAM": "elsewhere"}, "UPSTREAM", "auto, sim, live"),
        ({"KEY_PREFIX": "two words"}, "KEY_PREFIX", "spaces"),
        ({"ALLOWED_ORIGINS": "example.com"}, "ALLOWED_ORIGINS", "origin"),
        ({"COINGECKO_BASE_URL": "ftp://x"}, "COINGECKO_BASE_URL", "http"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting_and_rule(env: dict, setting: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.setting == setting
    assert setting in str(info.value)
    assert words in str(info.value)


@pytest.mark.parametrize("url", [
    "http://user:hunter2@localhost:6379",
    # Unencoded #, / and ? make a URL parser see the password as a fragment,
    # a path or a query, and show it.
    "redis://:hun#ter2@localhost:6379/0",
    "redis://default:hun/ter2@localhost:6379/0",
    "redis://:hun?ter2@localhost:6379/0",
    "redis://user:hunter2@localhost:63x9/0",
    "redis+sentinel://:hun/ter2@h1:26379,h2:26379/mymaster",
    "redis+sentinel://h1:26379/mymaster?sentinel_password=hun#ter2&bogus=1",
])
def test_errors_never_show_a_redis_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"REDIS_URL": url})
    assert "hun" not in str(info.value) and "ter2" not in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://default:hunter2@host:6379", "redis://default:***@host:6379"),
        ("rediss://u:p%40ss@host", "rediss://u:***@host"),
        ("redis://host:6379", "redis://host:6379"),
        ("redis+sentinel://:pw@h1:26379,h2:26379/mymaster", "redis+sentinel://:***@h1:26379,h2:26379/mymaster"),
        ("redis://:hun#ter2@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://:a/b?c@host/0", "redis://:***@host/0"),
        ("redis+sentinel://h1/m?sentinel_password=a@b&x=1", "redis+sentinel://h1/m?sentinel_password=***&x=1"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_valid_custom_timing_is_accepted() -> None:
    s = Settings.from_env(
        {"LOCK_TTL_SECONDS": "3", "RENEW_INTERVAL_SECONDS": "1", "LEASE_MARGIN_SECONDS": "0.5"})
    assert (s.lock_ttl, s.renew_interval, s.lease_margin) == (3.0, 1.0, 0.5)


def test_a_bad_sentinel_url_is_refused_at_start_up() -> None:
    for url in ("redis+sentinel://h1:26379/mymaster/x", "redis+sentinel://h1:26379/m?bogus=1",
                "redis+sentinel://h1:26379/m/0/extra"):
        with pytest.raises(ConfigError) as info:
            Settings.from_env({"REDIS_URL": url})
        assert info.value.setting == "REDIS_URL"


def test_redaction_in_free_text() -> None:
    from feed.logs import redact_text

    text = 'failed: redis://:pw1@h:6379/0 and "redis+sentinel://h:1/m?sentinel_password=pw2"'
    shown = redact_text(text)
    assert "pw1" not in shown and "pw2" not in shown
    assert redact_text("nothing secret: redis://h:6379/0") == "nothing secret: redis://h:6379/0"


def test_configuration_doc_matches_the_declarations() -> None:
    """docs/CONFIGURATION.md's tables are the declarations' (python -m feed config --write)."""
    from feed.config.reference import DOC, sync

    text = DOC.read_text()
    assert sync(text) == text, "docs/CONFIGURATION.md is out of date: run python -m feed config --write"
    for var in Settings.env_names():
        assert f"| `{var}` |" in text, f"{var} has no row in docs/CONFIGURATION.md"


def test_every_variable_the_code_reads_is_declared() -> None:
    import re
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "feed", "app.py",
                            "gunicorn.conf.py"], cwd=root, capture_output=True, text=True,
                           check=True).stdout.split()
    read = set()
    for name in files:
        if name.endswith(".py"):
            read |= set(re.findall(r"""(?:environ\.get|environ\[|getenv)\(?["']([A-Z][A-Z0-9_]+)["']""",
                                   (root / name).read_text()))
    wsgi = {n for n in read if n.startswith("HTTP_")} | {"REMOTE_ADDR", "QUERY_STRING", "PATH_INFO",
                                                          "REQUEST_METHOD"}
    assert read - wsgi <= Settings.env_names(), sorted(read - wsgi - Settings.env_names())


def test_the_original_s_other_variables_are_honoured_or_named() -> None:
    s = Settings.from_env({"HOST": "::", "RAILWAY_INSTANCE_ID": "inst-7", "TAAPI_SECRET": "taapi-secret-1"})
    assert (s.host, s.port) == ("::", 8081)
    # RAILWAY_REPLICA_ID first, else RAILWAY_INSTANCE_ID, as the original named its nodes.
    assert s.replica_label == "inst-7"
    assert Settings.from_env({"RAILWAY_INSTANCE_ID": "i", "RAILWAY_REPLICA_ID": "r"}).replica_label == "r"
    # TAAPI's secret is no longer needed: named, with what replaces it, and masked as a secret.
    assert [name for name, _ in s.unused()] == ["TAAPI_SECRET"]
    assert "Binance" in s.unused()[0][1]
    assert "taapi-secret-1" in secret_values({"TAAPI_SECRET": "taapi-secret-1"})
    assert Settings().unused() == []
    for key in ("FINNHUB_API_KEY", "CMC_API_KEY"):
        assert "k-123456789" in secret_values({key: "k-123456789"})


@pytest.mark.parametrize(("upstream", "redis_url", "sim_url", "mode"), [
    ("", None, None, "sim"),  # nothing configured: the embedded demo
    ("auto", "redis://r:6379/0", None, "live"),  # a deployment: real data
    ("auto", "redis://r:6379/0", "http://127.0.0.1:8090", "sim"),  # a simulator asked for
    ("sim", "redis://r:6379/0", None, "sim"),
    ("live", None, None, "live"),
])
def test_upstream_auto_is_real_data_wherever_deployed(upstream, redis_url, sim_url, mode) -> None:
    got, why = resolve_upstream(upstream, redis_url, sim_url)
    assert got == mode and why.startswith("UPSTREAM=")
    s = Settings.from_env({k: v for k, v in (("UPSTREAM", upstream), ("REDIS_URL", redis_url),
                                             ("SIM_URL", sim_url)) if v})
    assert s.upstream_mode == mode and s.simulated is (mode == "sim")
