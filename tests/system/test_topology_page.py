"""The topology page of real router processes, in a real headless browser: Debian's
Chromium driven by Selenium through Debian's chromedriver (nothing is downloaded).

    Chromium ──HTTP, every second──► A's admin listener
                                     A ══ B ══ C ══ A   (three router processes)

What an operator checks: A's page draws the three routers and the three links between
them; messages sent from A to a consumer on B show as a rate at A's end of the link A–B;
a router killed with SIGKILL, and one that goes silent (SIGSTOP), leave the graph within
the inter-router idle timeout plus one poll, and the silent one comes back by itself; at a
phone's size nothing overflows sideways; when the router behind the page goes, a banner
says so; with a token the page asks for it and loads through HTTP Basic.  Screenshots are
saved under ``tests/artifacts/`` (the path is printed).
"""

from __future__ import annotations

import base64
import re
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
from proton.utils import BlockingConnection
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from queue_clients import QueueReceiver, QueueSender
from system_support import ProtonThread, run_proton

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "topology-page"

IDLE_TIMEOUT = 1.5
"""``limits.inter_router_idle_timeout`` of the routers: a silent neighbour is gone after this."""
POLL = 1.0
"""The page asks the router every second."""
MARGIN = 2.0
"""For a busy test machine: a fetch and a redraw."""

TOKEN = "page-token-0123456789abcdef0123456789"
_ADMIN = re.compile(r"admin on (http://\S+)")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() or not CHROMEDRIVER.exists(),
    reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver): make system-deps",
)

PAGE_STATE = """
const text = (id) => document.getElementById(id).textContent;
return {
  routers: Array.from(document.querySelectorAll('#graph g.node'), (n) => n.dataset.router).sort(),
  links: Array.from(document.querySelectorAll('#graph g.link'), (l) => l.dataset.link).sort(),
  clients: Object.fromEntries(Array.from(document.querySelectorAll('#graph g.node'),
    (n) => [n.dataset.router, n.querySelector('text.clients').textContent])),
  rates: Object.fromEntries(Array.from(document.querySelectorAll('#graph g.link text.rate'),
    (t) => [t.parentNode.dataset.link + ' from ' + t.dataset.from, t.textContent])),
  addresses: Array.from(document.querySelectorAll('#addresses tbody tr'),
    (row) => Array.from(row.cells, (cell) => cell.textContent)),
  router: text('router-id'),
  status: text('status'),
  banner: document.getElementById('banner').hidden ? null : text('banner'),
};
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Any:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def admin_url(process: Any) -> str:
    match = process.stdout.wait_for(_ADMIN, 15)
    assert match is not None, process.output()
    return match.group(1)


def wait_page(driver: Any, holds: Callable[[dict[str, Any]], bool], what: str, timeout: float) -> dict[str, Any]:
    """Read the page until ``holds(state)``, bounded by ``timeout``; the state it held in."""
    deadline = time.monotonic() + timeout
    while True:
        state = driver.execute_script(PAGE_STATE)
        if holds(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"the page did not show {what} within {timeout} s; it shows {state}")
        time.sleep(0.05)  # between two looks at the page, not instead of one


def rate(state: dict[str, Any], link: str, sender: str) -> float | None:
    shown = state["rates"].get(f"{link} from {sender}")
    try:
        return float(shown)
    except (TypeError, ValueError):
        return None


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), path
    print(f"screenshot: {path}")
    return path


def test_the_page_draws_the_network_shows_link_traffic_and_drops_a_killed_router(network, browser) -> None:
    routers = network({"A": [], "B": [("A", 1)], "C": [("A", 1), ("B", 1)]}, extra="[admin]\nport = 0\n",
                      limits=f"inter_router_idle_timeout = {IDLE_TIMEOUT}\n", converge=False)
    base = admin_url(routers["A"].process)
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    browser.set_window_size(1280, 900)
    browser.get(f"{base}/")

    # The page is the check that the network formed.  Rates are differences between polls:
    # a number at A's ends once two have been made.
    state = wait_page(browser, lambda s: s["routers"] == ["A", "B", "C"] and s["links"] == ["A|B", "A|C", "B|C"]
                      and rate(s, "A|B", "A") is not None, "three routers, their links and A's rates", 30)
    assert state["router"] == "A" and state["status"].startswith("live") and state["banner"] is None, state
    assert state["clients"]["A"] == "0 clients", state

    client = BlockingConnection(routers["A"].url, timeout=10)
    try:
        wait_page(browser, lambda s: s["clients"]["A"] == "1 client", "A's client", 10)
    finally:
        client.close()

    consumer = ProtonThread(QueueReceiver(routers["B"].url, "page/work", 200, credit=100), timeout=60).start()
    wait_page(browser, lambda s: any(row[0] == "page/work" and row[4] == "B" for row in s["addresses"]),
              "A's address table with the consumer on B", 20)
    sender = run_proton(QueueSender(routers["A"].url, "page/work", [f"m{i}" for i in range(200)]), timeout=60)
    assert len(sender.accepted) == 200
    assert len(consumer.join_result().received) == 200
    state = wait_page(browser, lambda s: (rate(s, "A|B", "A") or 0) > 0, "a rate from A on the link A–B", 10)
    screenshot(browser, "desktop.png")

    killed = routers["C"].process
    killed.expect_exit = True
    killed.proc.kill()
    started = time.monotonic()
    bound = IDLE_TIMEOUT + POLL + MARGIN
    state = wait_page(browser, lambda s: s["routers"] == ["A", "B"] and s["links"] == ["A|B"],
                      "C gone with its links", bound)
    print(f"C left the page {time.monotonic() - started:.2f} s after SIGKILL (bound {bound} s)")
    assert state["banner"] is None, state
    screenshot(browser, "desktop-after-kill.png")

    # A phone: 390 CSS pixels wide, the page's own viewport meta in force.
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    browser.get(f"{base}/")
    wait_page(browser, lambda s: s["routers"] == ["A", "B"] and s["links"] == ["A|B"], "the network on a phone", 10)
    widths = browser.execute_script(
        "return {viewport: window.innerWidth, page: document.documentElement.scrollWidth,"
        " widest: Math.max(...Array.from(document.querySelectorAll('header, .panel, #graph'),"
        " (e) => e.getBoundingClientRect().right))};")
    assert widths["viewport"] == 390, widths
    assert widths["page"] <= widths["viewport"] and widths["widest"] <= widths["viewport"], widths
    screenshot(browser, "phone.png")

    # A router that goes silent without closing anything (stopped, or cut off) leaves
    # once its heartbeats stop: the inter-router idle timeout; it comes back by itself.
    silent = routers["B"].process.proc
    silent.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        wait_page(browser, lambda s: s["routers"] == ["A"] and s["links"] == [], "B gone once silent", bound)
        print(f"B left the page {time.monotonic() - started:.2f} s after it went silent (bound {bound} s)")
    finally:
        silent.send_signal(signal.SIGCONT)
    wait_page(browser, lambda s: s["routers"] == ["A", "B"] and s["links"] == ["A|B"], "B back", 20)

    # The router behind the page goes: the page says so instead of showing old news as live.
    routers["A"].process.expect_exit = True
    routers["A"].process.proc.kill()
    state = wait_page(browser, lambda s: s["banner"] is not None, "that A does not answer", POLL + MARGIN)
    assert state["banner"].startswith("Router unreachable") and state["status"].startswith("stale"), state
    screenshot(browser, "phone-router-gone.png")
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_with_a_token_the_page_needs_it_and_a_browser_gets_in_with_http_basic(router, browser, tmp_path) -> None:
    (tmp_path / "admin.token").write_text(TOKEN + "\n")
    process = router(f'[router]\nid = "solo"\n[admin]\nport = 0\ntoken_file = "{tmp_path / "admin.token"}"\n')
    base = admin_url(process)
    for path in ("/", "/ui/app.js"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}{path}", timeout=10)
        assert refused.value.code == 401 and refused.value.headers["WWW-Authenticate"].startswith("Basic")
    basic = "Basic " + base64.b64encode(f"operator:{TOKEN}".encode()).decode()
    with urllib.request.urlopen(urllib.request.Request(f"{base}/", headers={"Authorization": basic}), timeout=10) as page:
        assert page.headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]

    # What the browser's login prompt does: the token as the password, then every fetch carries it.
    browser.get(base.replace("http://", f"http://operator:{TOKEN}@") + "/")
    state = wait_page(browser, lambda s: s["router"] == "solo" and s["routers"] == ["solo"], "the router behind its token", 10)
    assert state["status"].startswith("live") and state["banner"] is None, state
