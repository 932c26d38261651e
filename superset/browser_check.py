"""Open Superset's dashboards in headless Chromium as a person would, and report what they show.

    .venv-superset/bin/python superset/browser_check.py [--agent NAME] [--user NAME] [--forbid WORD ...]
                                                        BASE_URL SCREENSHOT_DIR SLUG...
    .venv-superset/bin/python superset/browser_check.py --journey PHRASE [--detail-url URL] BASE_URL SCREENSHOT_DIR
    .venv-superset/bin/python superset/browser_check.py --incidents BASE_URL SCREENSHOT_DIR

Runs with the Superset environment's python (selenium comes with Superset), Debian's chromium
and chromedriver (never a downloaded browser). Logs in through the login form (as
BAGULA_SUPERSET_ADMIN_USERNAME / BAGULA_SUPERSET_ADMIN_PASSWORD from the environment, or as
--user with the password in BAGULA_CHECK_PASSWORD), opens each dashboard, waits until every
chart has rendered or failed, saves a full-page screenshot and prints one JSON line per
dashboard (with --agent, the dashboard's Agent filter set to it):

    {"slug", "title", "charts": [{"name", "viz_type", "state": "rendered"|"error"|"loading", "error",
                                  "applied_filters"}],
     "failed_requests": [{"url", "status"}], "screenshot",
     "forbidden_seen": [{"word", "where"}]}

--forbid: words that must not reach this user; each is looked for in the page's text and in
the body of every chart-data answer the browser received (what canvas charts draw, the
filters' options), and reported in forbidden_seen.

--journey: what an engineer does, as one JSON line per step: in the Session explorer, click
the first session id of Recent sessions and read the Session detail it opens (step "link");
then type PHRASE into the explorer's Search filter, apply it, and read the first session of
Recent sessions, click it and read its detail (step "search"); with --detail-url, open that
URL (a session's link as an alert builds it) and read the detail (step "url"). Each step
reports the session id it opened and the text of each chart of the detail dashboard, with a
screenshot.

--incidents: on the Incidents dashboard, click the first incident's example session and read
its detail (step "incident-session"); click the first incident's agent, which opens Regressions
and anomalies filtered on it (step "incident-verdicts": the charts and the rows of the verdict
list), then click the first verdict's session id and read its detail (step "verdict-session");
with --incidents-url, open that URL (an incident alert's link) and read the list (step "incidents-url").

Exit status 0 when it could check every dashboard (whatever the dashboards show): the caller decides.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Generous: on a loaded machine a chart's query and drawing take long; a stuck chart still fails.
CHART_TIMEOUT_S = 180
# Tall enough that no chart waits below the fold (dashboards render charts lazily).
WINDOW = (1600, 3000)
DETAIL_LINK = 'a[href*="/superset/dashboard/session-detail/"]'

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
CHART_TEXTS_JS = """
const texts = {};
document.querySelectorAll('[data-test="chart-grid-component"]').forEach(chart => {
  texts[chart.getAttribute('data-test-chart-name')] = chart.innerText;
});
return texts;
"""


def start_browser(user_data_dir: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     f"--user-data-dir={user_data_dir}", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(argument)
    # The network log tells which chart-data requests failed (and lets us read their answers).
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # An explicit driver: selenium-manager (which downloads browsers) must not run.
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def log_in(browser: webdriver.Chrome, base_url: str, username: str, password: str, attempts: int = 3) -> None:
    """Through the login form. A page still rendering can swallow keystrokes (the form is
    mounted again), so the fields are read back before the click, and a refused attempt is
    made again from a fresh page; each refusal's message is reported."""
    refusals = []
    for _ in range(attempts):
        browser.get(f"{base_url}/login/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: b.execute_script("return document.readyState") == "complete")
        button = wait.until(expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, '[data-test="login-button"]')))
        for field_id, value in (("username", username), ("password", password)):
            field = wait.until(expected_conditions.presence_of_element_located((By.ID, field_id)))
            field.clear()
            field.send_keys(value)
        typed = [browser.find_element(By.ID, field_id).get_attribute("value") for field_id in ("username", "password")]
        if typed != [username, password]:
            refusals.append(f"the form held {typed[0]!r} and a {len(typed[1])}-character password before the click")
            continue
        button.click()
        try:
            wait.until(lambda b: "/login" not in b.current_url)
            return
        except Exception:
            message = browser.find_element(By.TAG_NAME, "body").text.strip().replace("\n", " | ")[:300]
            refusals.append(f"still on {browser.current_url}: {message!r}")
    raise SystemExit(f"login as {username!r} failed {attempts} times: " + "; ".join(refusals))


def chart_responses(browser: webdriver.Chrome) -> list[dict]:
    """The chart-data answers since the log was last read: url, status and the request id."""
    answers = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] != "Network.responseReceived":
            continue
        response = message["params"]["response"]
        if "/api/v1/chart/data" in response["url"]:
            answers.append({"url": response["url"], "status": response["status"],
                            "request_id": message["params"]["requestId"]})
    return answers


def body_of(browser: webdriver.Chrome, request_id: str) -> str:
    try:
        return browser.execute_cdp_cmd("Network.getResponseBody", {"requestId": request_id})["body"]
    except WebDriverException:
        return ""


def agent_filter_query(slug: str, agent: str) -> str:
    """The URL form of the dashboard's Agent filter (NATIVE_FILTER-<slug>-agent) set to one agent."""
    filter_id = f"NATIVE_FILTER-{slug}-agent"
    return ("?native_filters=(" + filter_id + ":(extraFormData:(filters:!((col:agent_name,op:IN,val:!('"
            + agent + "')))),filterState:(value:!('" + agent + "')),id:" + filter_id + "))")


def wait_for_charts(browser: webdriver.Chrome) -> list[dict]:
    """Every chart of the page rendered or failed (or the time is up): their states."""
    charts: list[dict] = []

    def settled(b: webdriver.Chrome) -> bool:
        nonlocal charts
        charts = b.execute_script(CHART_STATES_JS)
        return bool(charts) and all(chart["state"] != "loading" for chart in charts)

    try:
        WebDriverWait(browser, CHART_TIMEOUT_S, poll_frequency=0.5).until(settled)
    except Exception:  # noqa: BLE001 - reported as charts still loading
        pass
    return charts


def save_screenshot(browser: webdriver.Chrome, path: Path) -> str:
    time.sleep(1)  # let the last chart's animation settle before the screenshot
    # The screenshot ends below the last chart, not at the bottom of the tall window.
    height = browser.execute_script(
        "const charts = document.querySelectorAll('[data-test=\"dashboard-component-chart-holder\"]');"
        "return Math.ceil(Math.max(0, ...Array.from(charts, c => c.getBoundingClientRect().bottom))) + 40;")
    # The window's size includes the browser's own frame (about 150 px here).
    browser.set_window_size(WINDOW[0], max(height, 800) + 200)
    browser.save_screenshot(str(path))
    browser.set_window_size(*WINDOW)
    return str(path)


def check_dashboard(browser: webdriver.Chrome, base_url: str, slug: str, screenshots: Path,
                    agent: str | None = None, forbid: tuple[str, ...] = (), tag: str = "") -> dict:
    browser.set_window_size(*WINDOW)
    browser.get_log("performance")  # start this dashboard's network log afresh
    browser.get(f"{base_url}/superset/dashboard/{slug}/" + (agent_filter_query(slug, agent) if agent else ""))
    charts = wait_for_charts(browser)
    name = f"{slug}--{agent}" if agent else slug
    screenshot = save_screenshot(browser, screenshots / f"{name}{tag}.png")
    answers = chart_responses(browser)
    seen = []
    if forbid:
        page = browser.execute_script("return document.body.innerText")
        bodies = " ".join(body_of(browser, a["request_id"]) for a in answers)
        seen = [{"word": word, "where": where} for word in forbid
                for where, text in (("page", page), ("chart data", bodies)) if word in text]
    return {
        "slug": slug,
        "title": browser.title,
        "charts": charts,
        "failed_requests": [{"url": a["url"], "status": a["status"]} for a in answers if a["status"] >= 400],
        "chart_answers": len(answers),
        "screenshot": screenshot,
        "forbidden_seen": seen,
    }


# --- the engineer's journey: explorer -> session detail; search -> session detail ---------


def _recent_sessions(browser: webdriver.Chrome):
    return browser.find_element(By.CSS_SELECTOR, '[data-test="chart-grid-component"][data-test-chart-name="Recent sessions"]')


def _read_detail(browser: webdriver.Chrome, screenshots: Path, step: str, session_id: str | None, **report) -> dict:
    """What the Session detail dashboard now open shows."""
    charts = wait_for_charts(browser)
    return {
        "step": step,
        "session_id": session_id,
        "url": browser.current_url,
        "title": browser.title,
        "charts": charts,
        "texts": browser.execute_script(CHART_TEXTS_JS),
        "screenshot": save_screenshot(browser, screenshots / f"session-detail--{step}.png"),
        **report,
    }


def _open_first_session(browser: webdriver.Chrome, screenshots: Path, step: str, **report) -> dict:
    """Click the first session id of Recent sessions; what the Session detail it opens shows."""
    link = WebDriverWait(browser, 30).until(lambda b: _recent_sessions(b).find_element(By.CSS_SELECTOR, DETAIL_LINK))
    session_id = link.text.strip()
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", link)
    link.click()
    WebDriverWait(browser, 30).until(lambda b: "/superset/dashboard/session-detail/" in b.current_url)
    return _read_detail(browser, screenshots, step, session_id, **report)


def _table_rows(browser: webdriver.Chrome, chart_name: str) -> list[str]:
    chart = browser.find_element(By.CSS_SELECTOR, f'[data-test="chart-grid-component"][data-test-chart-name="{chart_name}"]')
    return browser.execute_script(
        "return Array.from(arguments[0].querySelectorAll('tbody tr')).map(r => r.innerText);", chart)


def _click_first_link(browser: webdriver.Chrome, chart_name: str, href_part: str) -> tuple[str, str]:
    """Click the first link of a table chart whose address contains ``href_part``; its text and address."""
    chart_css = f'[data-test="chart-grid-component"][data-test-chart-name="{chart_name}"]'
    link = WebDriverWait(browser, 30).until(lambda b: b.find_element(
        By.CSS_SELECTOR, f'{chart_css} a[href*="{href_part}"]'))
    text, href = link.text.strip(), link.get_attribute("href")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", link)
    link.click()
    return text, href


def incidents_journey(browser: webdriver.Chrome, base_url: str, screenshots: Path,
                      incidents_url: str | None = None) -> list[dict]:
    """From the Incidents dashboard: the first incident's example session (step "incident-session"),
    its agent's verdicts on Regressions and anomalies (step "incident-verdicts"), and from there
    the first verdict's session (step "verdict-session")."""
    dashboard = f"{base_url}/superset/dashboard/incidents/"
    browser.get(dashboard)
    charts = wait_for_charts(browser)
    rows = _table_rows(browser, "Incidents (list)")
    shot = save_screenshot(browser, screenshots / "incidents--journey.png")
    session_id, href = _click_first_link(browser, "Incidents (list)", "/superset/dashboard/session-detail/")
    WebDriverWait(browser, 30).until(lambda b: "/superset/dashboard/session-detail/" in b.current_url)
    steps = [_read_detail(browser, screenshots, "incident-session", session_id, incident_rows=rows,
                          incident_charts=charts, incidents_screenshot=shot, href=href)]

    browser.get(dashboard)
    wait_for_charts(browser)
    agent, href = _click_first_link(browser, "Incidents (list)", "/superset/dashboard/regressions-and-anomalies/")
    WebDriverWait(browser, 30).until(lambda b: "/superset/dashboard/regressions-and-anomalies/" in b.current_url)
    charts = wait_for_charts(browser)
    steps.append({
        "step": "incident-verdicts", "agent": agent, "href": href, "url": browser.current_url, "title": browser.title,
        "charts": charts, "verdict_rows": _table_rows(browser, "Open items (list)"),
        "screenshot": save_screenshot(browser, screenshots / "regressions-and-anomalies--incident.png"),
    })
    session_id, href = _click_first_link(browser, "Open items (list)", "/superset/dashboard/session-detail/")
    WebDriverWait(browser, 30).until(lambda b: "/superset/dashboard/session-detail/" in b.current_url)
    steps.append(_read_detail(browser, screenshots, "verdict-session", session_id, href=href))
    if incidents_url:
        browser.get(incidents_url)
        charts = wait_for_charts(browser)
        steps.append({"step": "incidents-url", "url": incidents_url, "title": browser.title, "charts": charts,
                      "incident_rows": _table_rows(browser, "Incidents (list)"),
                      "screenshot": save_screenshot(browser, screenshots / "incidents--alert-url.png")})
    return steps


def journey(browser: webdriver.Chrome, base_url: str, screenshots: Path, phrase: str,
            detail_url: str | None = None) -> list[dict]:
    explorer = f"{base_url}/superset/dashboard/session-explorer/"
    browser.get(explorer)
    wait_for_charts(browser)
    steps = [_open_first_session(browser, screenshots, "link")]

    browser.get(explorer)
    wait_for_charts(browser)
    before = _recent_sessions(browser).text
    search = WebDriverWait(browser, 30).until(
        expected_conditions.element_to_be_clickable((By.ID, "NATIVE_FILTER-session-explorer-search")))
    search.click()
    search.send_keys(phrase)
    # The filter offers what was typed as a value of its own (after its debounce): take it.
    WebDriverWait(browser, 30).until(lambda b: phrase in b.execute_script(
        "return Array.from(document.querySelectorAll('.ant-select-item-option')).map(e => e.innerText)"))
    search.send_keys(Keys.ENTER)
    apply = browser.find_element(By.CSS_SELECTOR, '[data-test="filter-bar__apply-button"]')
    WebDriverWait(browser, 30).until(lambda b: apply.is_enabled())
    apply.click()
    # The table answers the search: its rows change, then it renders.
    WebDriverWait(browser, CHART_TIMEOUT_S, poll_frequency=0.5).until(
        lambda b: _recent_sessions(b).text != before)
    charts = wait_for_charts(browser)
    rows = browser.execute_script(
        "return Array.from(arguments[0].querySelectorAll('tbody tr')).map(r => r.innerText);", _recent_sessions(browser))
    explorer_shot = save_screenshot(browser, screenshots / "session-explorer--search.png")
    steps.append(_open_first_session(browser, screenshots, "search", explorer_charts=charts, result_rows=rows,
                                     explorer_screenshot=explorer_shot))
    if detail_url:
        browser.get(detail_url)
        steps.append(_read_detail(browser, screenshots, "url", None))
    return steps


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent")
    parser.add_argument("--user")
    parser.add_argument("--forbid", action="append", default=[])
    parser.add_argument("--journey", metavar="PHRASE")
    parser.add_argument("--detail-url")
    parser.add_argument("--incidents", action="store_true", help="the incidents journey")
    parser.add_argument("--incidents-url", help="with --incidents: open this Incidents URL last")
    parser.add_argument("base_url")
    parser.add_argument("screenshots", type=Path)
    parser.add_argument("slugs", nargs="*")
    args = parser.parse_args(argv[1:])
    base_url = args.base_url.rstrip("/")
    args.screenshots.mkdir(parents=True, exist_ok=True)
    if args.user:
        username, password = args.user, os.environ["BAGULA_CHECK_PASSWORD"]
    else:
        username, password = os.environ["BAGULA_SUPERSET_ADMIN_USERNAME"], os.environ["BAGULA_SUPERSET_ADMIN_PASSWORD"]
    tag = f"--as-{args.user}" if args.user else ""
    with tempfile.TemporaryDirectory(prefix="bagula-chromium-") as profile:
        browser = start_browser(profile)
        try:
            log_in(browser, base_url, username, password)
            if args.journey:
                for step in journey(browser, base_url, args.screenshots, args.journey, args.detail_url):
                    print(json.dumps(step), flush=True)
            if args.incidents:
                for step in incidents_journey(browser, base_url, args.screenshots, args.incidents_url):
                    print(json.dumps(step), flush=True)
            for slug in args.slugs:
                report = check_dashboard(browser, base_url, slug, args.screenshots, args.agent,
                                         tuple(args.forbid), tag)
                print(json.dumps(report), flush=True)
        finally:
            browser.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
