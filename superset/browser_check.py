"""Open Superset's dashboards in headless Chromium as a person would, and report what they show.

    .venv-superset/bin/python superset/browser_check.py [--agent NAME] BASE_URL SCREENSHOT_DIR SLUG...

Runs with the Superset environment's python (selenium comes with Superset), Debian's chromium
and chromedriver (never a downloaded browser). Logs in through the login form
(BAGULA_SUPERSET_ADMIN_USERNAME / BAGULA_SUPERSET_ADMIN_PASSWORD from the environment), opens
each dashboard, waits until every chart has rendered or failed, saves a full-page screenshot
and prints one JSON line per dashboard (with --agent, the dashboard's Agent filter set to it):

    {"slug", "title", "charts": [{"name", "viz_type", "state": "rendered"|"error"|"loading", "error",
                                  "applied_filters"}],
     "failed_requests": [{"url", "status"}], "screenshot"}

Exit status 0 when it could check every dashboard (whatever the dashboards show): the caller decides.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHART_TIMEOUT_S = 90
# Tall enough that no chart waits below the fold (dashboards render charts lazily).
WINDOW = (1600, 3000)

# Each chart's state, read in the page: an error alert, a loading indicator, or rendered.
CHART_STATES_JS = """
return Array.from(document.querySelectorAll('[data-test="chart-grid-component"]')).map(chart => {
  const alert = chart.querySelector('.ant-alert-error, [data-test="error-alert"]');
  const loading = chart.querySelector('[data-test="loading-indicator"], .loading');
  const rendered = chart.querySelector('[data-test="slice-container"]');
  return {
    name: chart.getAttribute('data-test-chart-name'),
    viz_type: chart.getAttribute('data-test-viz-type'),
    state: alert ? 'error' : (loading || !rendered) ? 'loading' : 'rendered',
    error: alert ? alert.innerText : null,
    applied_filters: Number((chart.querySelector('[data-test="applied-filter-count"]') || {}).innerText || 0),
  };
});
"""


def start_browser(user_data_dir: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     f"--user-data-dir={user_data_dir}", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(argument)
    # The network log tells which chart-data requests failed.
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # An explicit driver: selenium-manager (which downloads browsers) must not run.
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def log_in(browser: webdriver.Chrome, base_url: str, username: str, password: str) -> None:
    browser.get(f"{base_url}/login/")
    wait = WebDriverWait(browser, 30)
    wait.until(expected_conditions.presence_of_element_located((By.ID, "username"))).send_keys(username)
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, '[data-test="login-button"]').click()
    try:
        wait.until(lambda b: "/login" not in b.current_url)
    except Exception:
        raise SystemExit(f"login as {username!r} failed: still on {browser.current_url}") from None


def failed_chart_requests(browser: webdriver.Chrome) -> list[dict]:
    failed = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] != "Network.responseReceived":
            continue
        response = message["params"]["response"]
        if "/api/v1/chart/data" in response["url"] and response["status"] >= 400:
            failed.append({"url": response["url"], "status": response["status"]})
    return failed


def agent_filter_query(slug: str, agent: str) -> str:
    """The URL form of the dashboard's Agent filter (NATIVE_FILTER-<slug>-agent) set to one agent."""
    filter_id = f"NATIVE_FILTER-{slug}-agent"
    return ("?native_filters=(" + filter_id + ":(extraFormData:(filters:!((col:agent_name,op:IN,val:!('"
            + agent + "')))),filterState:(value:!('" + agent + "')),id:" + filter_id + "))")


def check_dashboard(browser: webdriver.Chrome, base_url: str, slug: str, screenshots: Path,
                    agent: str | None = None) -> dict:
    browser.set_window_size(*WINDOW)
    browser.get_log("performance")  # start this dashboard's network log afresh
    browser.get(f"{base_url}/superset/dashboard/{slug}/" + (agent_filter_query(slug, agent) if agent else ""))
    deadline = time.monotonic() + CHART_TIMEOUT_S
    charts: list[dict] = []
    while time.monotonic() < deadline:
        time.sleep(1)
        charts = browser.execute_script(CHART_STATES_JS)
        if charts and all(chart["state"] != "loading" for chart in charts):
            break
    time.sleep(1)  # let the last chart's animation settle before the screenshot
    # The screenshot ends below the last chart, not at the bottom of the tall window.
    height = browser.execute_script(
        "const charts = document.querySelectorAll('[data-test=\"dashboard-component-chart-holder\"]');"
        "return Math.ceil(Math.max(0, ...Array.from(charts, c => c.getBoundingClientRect().bottom))) + 40;")
    # The window's size includes the browser's own frame (about 150 px here).
    browser.set_window_size(WINDOW[0], max(height, 800) + 200)
    screenshot = screenshots / (f"{slug}--{agent}.png" if agent else f"{slug}.png")
    browser.save_screenshot(str(screenshot))
    return {
        "slug": slug,
        "title": browser.title,
        "charts": charts,
        "failed_requests": failed_chart_requests(browser),
        "screenshot": str(screenshot),
    }


def main(argv: list[str]) -> int:
    agent = None
    if len(argv) > 2 and argv[1] == "--agent":
        agent, argv = argv[2], [argv[0], *argv[3:]]
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    base_url, screenshots, slugs = argv[1].rstrip("/"), Path(argv[2]), argv[3:]
    screenshots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bagula-chromium-") as profile:
        browser = start_browser(profile)
        try:
            log_in(browser, base_url, os.environ["BAGULA_SUPERSET_ADMIN_USERNAME"],
                   os.environ["BAGULA_SUPERSET_ADMIN_PASSWORD"])
            for slug in slugs:
                print(json.dumps(check_dashboard(browser, base_url, slug, screenshots, agent)), flush=True)
        finally:
            browser.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
