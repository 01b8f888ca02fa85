"""The dashboard at ``/`` in headless Chromium, against real Gunicorn instances.

Every assertion reads what a user sees: the page's DOM, taken in one script
call per poll so that epoch and seq are never read from two different
snapshots. Waits are bounded generously: a slow machine costs time, not a
false failure. Skipped, saying why, when Debian's Chromium is not installed.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests

from tests.support.service import Instance
from tests.support.tcpproxy import TCPProxy
from tests.test_cluster import wait_leader

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
except ImportError:  # requirements-dev.txt pins it; say so rather than error
    webdriver = None

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# What works here as root, with no network and no GPU; nothing phones home.
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,900",
]
SYMBOLS = ["BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "LINK"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="chromium not installed: apt-get install chromium chromium-driver"),
    pytest.mark.skipif(webdriver is None,
                       reason="selenium not installed: pip install -r requirements-dev.txt"),
]

# The page as a user sees it (innerText: visible text only), in one call.
VIEW_JS = """
const el = (id) => document.querySelector(`[data-testid="${id}"]`);
const text = (id) => { const e = el(id); return e ? e.innerText.trim() : null; };
const prices = {}, order = [];
for (const row of document.querySelectorAll('tr[data-testid^="price-row-"]')) {
  const sym = row.dataset.testid.slice("price-row-".length);
  const cell = (name) => row.querySelector(`[data-testid="${name}-${sym}"]`).innerText.trim();
  prices[sym] = {price: cell("price"), change: cell("change")};
  order.push(sym);
}
const banner = el("stale-banner");
const simulated = el("simulated-banner");
return {
  simulated_shown: simulated.checkVisibility(), simulated: simulated.innerText.trim(),
  conn: text("conn-state"), conn_state: el("conn-state").dataset.state,
  served_by: text("served-by"), leader: text("leader"), epoch: text("epoch"), seq: text("seq"),
  age: text("data-age"), lock: text("lock"),
  stale_shown: banner.checkVisibility(), stale: banner.innerText.trim(),
  history: [...el("leader-history").children].map((li) => li.innerText.trim()),
  nodes: [...el("nodes").children].map((li) => ({role: li.dataset.role, text: li.innerText.trim()})),
  conn_log: [...el("conn-log").children].map((li) => li.innerText.trim()),
  market: text("market"), sentiment: text("sentiment"), rsi: text("rsi"), prices, order,
  sections: Object.fromEntries([...el("sections").querySelectorAll("li[data-testid]")].map((li) =>
    [li.dataset.testid.slice("section-".length), {stale: li.dataset.stale, text: li.innerText.trim()}])),
};
"""

# Visible elements that stick out of the viewport sideways.
OVERFLOW_JS = """
const width = document.documentElement.clientWidth;
const out = [];
for (const node of document.querySelectorAll("body *")) {
  if (!node.checkVisibility()) continue;
  const r = node.getBoundingClientRect();
  if (r.width && (r.right > width + 0.5 || r.left < -0.5)) {
    const name = node.dataset.testid || node.className;
    out.push(`${node.tagName} ${name} ${Math.round(r.left)}..${Math.round(r.right)}`);
  }
}
return {inner: window.innerWidth, client: width, scroll: document.documentElement.scrollWidth, out};
"""


# --- fixtures ----------------------------------------------------------------



@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager never runs (it would download).
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def start_instances(stack: ExitStack, n: int, redis_url: str, sim_url: str, workers: int = 2,
                    **env: str) -> list[Instance]:
    instances = [Instance(f"r{i + 1}", workers=workers, redis_url=redis_url, sim_url=sim_url, env=env)
                 for i in range(n)]
    for inst in instances:
        stack.callback(inst.stop)
    for inst in instances:
        inst.wait_ready()
    return instances


# --- the page ----------------------------------------------------------------

class Dashboard:
    """Reads the page; remembers every (epoch, seq) it showed, to check the order."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver
        self.keys: list[tuple[int, int]] = []

    def open(self, url: str) -> None:
        self.driver.get(url)

    def view(self) -> dict:
        v = self.driver.execute_script(VIEW_JS)
        if v["epoch"].isdigit() and v["seq"].isdigit():
            self.keys.append((int(v["epoch"]), int(v["seq"])))
        return v

    def wait(self, cond: Callable[[dict], bool], what: str, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            v = self.view()
            if cond(v):
                return v
            if time.monotonic() > deadline:
                raise AssertionError(f"the page never showed {what} within {timeout}s; it shows {v}")
            time.sleep(0.1)

    def assert_in_order(self) -> None:
        went_back = [(a, b) for a, b in zip(self.keys, self.keys[1:], strict=False) if b < a]
        assert not went_back, f"(epoch, seq) went backwards on screen: {went_back[:3]}"

    def assert_no_script_errors(self) -> None:
        errors = [e["message"] for e in self.driver.get_log("browser") if "Uncaught" in e["message"]]
        assert not errors, errors


def money(text: str) -> float:
    return float(text.replace("$", "").replace(",", ""))


def key(v: dict) -> tuple[int, int]:
    return int(v["epoch"]), int(v["seq"])


def all_prices(v: dict) -> bool:
    """Every default symbol, in order, shows a dollar price and a signed 24 h change."""
    rows = v["prices"]
    return (v["order"] == SYMBOLS
            and all(re.fullmatch(r"\$[\d,]+\.\d+", rows[s]["price"]) for s in SYMBOLS)
            and all(re.fullmatch(r"[+-]?\d+\.\d\d %", rows[s]["change"]) for s in SYMBOLS))


def shows_live_data(v: dict) -> bool:
    return v["conn_state"] == "live" and all_prices(v) and v["epoch"].isdigit() and v["seq"].isdigit()


# --- tests -------------------------------------------------------------------

def test_prices_cluster_view_and_leader_failover(stack, redis_proc, rclient, sim, browser, artifacts) -> None:
    instances = start_instances(stack, 2, redis_proc.url, sim.url)
    nodes = {node: pid for inst in instances for node, pid in inst.nodes.items()}
    leader = wait_leader(rclient)
    page = Dashboard(browser)
    page.open(instances[0].url + "/")

    v = page.wait(shows_live_data, "live prices for BTC, ETH, SOL, BNB and XRP")
    assert all(money(p["price"]) > 0 for p in v["prices"].values())
    assert v["served_by"] in instances[0].nodes
    # The simulated exchange feeds it: the page says so in words, above the prices.
    assert v["simulated_shown"] and "Simulated data" in v["simulated"], v["simulated"]
    # BTC's daily RSI(14), from Binance's daily candles.
    v = page.wait(lambda v: re.fullmatch(r"\d{1,3}\.\d", v["rsi"] or ""), "BTC's RSI")
    v = page.wait(lambda v: v["leader"] == leader, f"the leader {leader}")
    assert int(v["epoch"]) == int(rclient.get("websocket:epoch"))
    assert v["market"] and "unavailable" not in v["market"] and "/ 100" in v["sentiment"]
    v = page.wait(lambda v: any("acquired" in h and leader in h for h in v["history"]),
                  "the leader's election in the history")
    assert leader in v["lock"]
    # The live nodes, from presence: the leader first, every worker of both instances.
    v = page.wait(lambda v: len(v["nodes"]) == len(nodes), "every live node listed")
    assert v["nodes"][0]["role"] == "leader" and leader in v["nodes"][0]["text"]
    assert sorted(n["role"] for n in v["nodes"]) == ["deputy", "follower", "follower", "leader"]
    assert all(re.search(r"\d+ clients?$", n["text"]) for n in v["nodes"]), v["nodes"]
    assert not v["stale_shown"] and re.fullmatch(r"\d+ s", v["age"])
    browser.save_screenshot(str(artifacts / "dashboard-laptop.png"))
    first = v

    # The leader dies without a word; its lock expires (2 s here) and another takes over.
    os.kill(nodes[leader], signal.SIGKILL)
    new = wait_leader(rclient, timeout=15, not_=leader)
    v = page.wait(lambda v: v["leader"] == new and int(v["epoch"]) > int(first["epoch"]),
                  f"the new leader {new} and a higher epoch", timeout=25)
    page.wait(lambda v: any("acquired" in h and new in h for h in v["history"]),
              "the new leader's election in the history")
    after = key(v)
    v = page.wait(lambda v: shows_live_data(v) and key(v) >= (after[0], after[1] + 3),
                  "snapshots still arriving after the failover")
    assert v["prices"] != first["prices"], "prices never changed on screen"
    page.assert_in_order()
    page.assert_no_script_errors()


def test_page_reconnects_through_the_proxy_when_its_instance_stops(stack, redis_proc, sim, browser) -> None:
    instances = start_instances(stack, 3, redis_proc.url, sim.url, workers=1)
    proxy = TCPProxy([("127.0.0.1", inst.port) for inst in instances])
    stack.callback(proxy.close)
    page = Dashboard(browser)
    page.open(f"http://127.0.0.1:{proxy.port}/")

    v = page.wait(shows_live_data, "live data through the proxy")
    own = next(inst for inst in instances if v["served_by"] in inst.nodes)
    others = {node for inst in instances if inst is not own for node in inst.nodes}
    before = key(v)

    own.proc.signal(signal.SIGTERM)  # its clients get 1001 and should go elsewhere
    v = page.wait(lambda v: v["served_by"] in others and v["conn_state"] == "live",
                  "a worker of another instance serving the page", timeout=30)
    assert any("closed 1001" in line for line in v["conn_log"]), v["conn_log"]
    assert any(f"served by {v['served_by']}" in line for line in v["conn_log"]), v["conn_log"]
    back = key(v)
    assert back >= before
    page.wait(lambda v: shows_live_data(v) and key(v) >= (back[0], back[1] + 3),
              "snapshots still arriving after the reconnect")
    page.assert_in_order()
    page.assert_no_script_errors()


def test_stale_state_from_the_server_and_from_the_page_itself(stack, redis_proc, sim, browser,
                                                             artifacts) -> None:
    (inst,) = start_instances(stack, 1, redis_proc.url, sim.url, workers=1, STALE_AFTER_SECONDS="2",
                              COINGECKO_INTERVAL_SECONDS="1", COINGECKO_MARKET_INTERVAL_SECONDS="1",
                              FEAR_GREED_INTERVAL_SECONDS="1",
                              RSI_INTERVAL_SECONDS="1", SECTION_MAX_AGE_SECONDS="6")
    page = Dashboard(browser)
    # The page's own threshold, for when no server can tell it.
    page.open(inst.url + "/?stale_after=5")
    v = page.wait(shows_live_data, "live data")
    assert not v["stale_shown"]
    binance = v["sections"]["binance-prices"]
    assert binance["stale"] == "false" and "s old" in binance["text"]

    # Every provider fails. Snapshots still come with the last good values
    # (nothing vanishes), each section marked stale once it is overdue.
    requests.post(sim.url + "/_sim/faults", json={"status": 500}, timeout=5).raise_for_status()
    v = page.wait(lambda v: v["stale_shown"], "the stale banner", timeout=15)
    assert "Stale data" in v["stale"] and "failing" in v["stale"] and "last good values" in v["stale"]
    assert v["conn_state"] == "live"
    assert all_prices(v), "the last good prices should stay on screen"
    assert all(sec["stale"] == "true" for sec in v["sections"].values()), v["sections"]
    assert "(stale)" in v["sections"]["coingecko-market"]["text"]
    browser.save_screenshot(str(artifacts / "dashboard-stale.png"))
    # Past their maximum age they go: no snapshot any more, and the server says so after 2 s.
    v = page.wait(lambda v: "no new snapshot" in v["stale"], "the no-snapshot banner", timeout=20)
    # The server's 2 s, read on the page's clock and rounded down: at least 1.
    assert int(v["age"].split()[0]) >= 1

    # The upstream recovers: fresh data ends the stale state.
    requests.delete(sim.url + "/_sim/faults", timeout=5).raise_for_status()
    page.wait(lambda v: not v["stale_shown"] and v["age"] in ("0 s", "1 s"), "fresh data again")

    # The only instance stops: the page says it is reconnecting, and past its
    # own threshold that the data is stale even though no server told it.
    inst.proc.signal(signal.SIGTERM)
    v = page.wait(lambda v: v["conn_state"] == "reconnecting", "the reconnecting state")
    assert re.fullmatch(r"closed \d+ · reconnecting in \d+ s", v["conn"]), v["conn"]
    v = page.wait(lambda v: v["stale_shown"] and "unreachable" in v["stale"], "the page's own stale state")
    assert any("closed 1001" in line for line in v["conn_log"]), v["conn_log"]
    page.assert_in_order()
    page.assert_no_script_errors()


def test_phone_width_renders_without_horizontal_overflow(stack, redis_proc, sim, browser, artifacts) -> None:
    (inst,) = start_instances(stack, 1, redis_proc.url, sim.url, workers=1)
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    page = Dashboard(browser)
    page.open(inst.url + "/")
    page.wait(lambda v: shows_live_data(v) and v["history"] and "held by" in v["lock"],
              "live data and the cluster view")
    layout = browser.execute_script(OVERFLOW_JS)
    assert layout["inner"] == 390, layout
    assert layout["scroll"] <= layout["client"], layout
    assert not layout["out"], f"sticking out of a 390 px screen: {layout['out']}"
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    (artifacts / "dashboard-phone.png").write_bytes(base64.b64decode(shot["data"]))
    page.assert_no_script_errors()


def test_data_age_is_measured_on_the_servers_clock(stack, redis_proc, sim, browser) -> None:
    (inst,) = start_instances(stack, 1, redis_proc.url, sim.url, workers=1)
    # This browser's clock runs two minutes fast, as a phone's may.
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        const realNow = Date.now;
        Date.now = () => realNow() + 120000;
    """})
    page = Dashboard(browser)
    page.open(inst.url + "/")
    page.wait(shows_live_data, "live data")
    time.sleep(1.5)  # past the clock ping and at least one tick of the age
    v = page.view()
    assert v["age"] in ("0 s", "1 s") and not v["stale_shown"], v
    page.assert_no_script_errors()


def test_the_pages_token_is_passed_to_the_socket(stack, redis_proc, sim, browser) -> None:
    (inst,) = start_instances(stack, 1, redis_proc.url, sim.url, workers=1, WS_TOKEN="s3cret-token")
    page = Dashboard(browser)
    page.open(inst.url + "/")
    v = page.wait(lambda v: v["conn_state"] == "reconnecting", "a refused socket")
    assert v["order"] == [] and not v["served_by"].startswith("ws-")
    page.open(inst.url + "/?token=s3cret-token")
    page.wait(shows_live_data, "live data with the token")
    page.assert_no_script_errors()
