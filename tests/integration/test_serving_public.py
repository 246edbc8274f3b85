"""What the public sees of a running server: the page in a real browser, /metrics, the log.

A real uvicorn on 127.0.0.1 serves the tiny int8 model; Debian's headless
Chromium (packages chromium and chromium-driver) drives the page.
"""

import json
import os
import re
import shutil

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devkit.servers import Server, headless_chromium
from distrinews.runtime.labels import LABELS

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tiny_onnx):
    server = Server(str(tiny_onnx), dict(os.environ), max_text_chars=2000)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        if os.environ.get("DISTRINEWS_REQUIRE_BROWSER"):  # CI installs it: never skip there
            pytest.fail(
                "chromium and chromedriver are required (apt-get install chromium chromium-driver)"
            )
        pytest.skip("needs Debian's chromium and chromium-driver")
    driver = headless_chromium()
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(browser, condition, timeout: float = 20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(lambda driver: condition(driver))


def test_the_page_classifies_a_headline_typed_with_the_keyboard(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{server.url}/")
    assert browser.title.startswith("DistriNews")
    box = browser.find_element(By.ID, "text")
    box.send_keys("Stocks rally as oil prices fall for a third day", Keys.ENTER)
    wait_until(browser, lambda d: d.find_element(By.ID, "result").is_displayed())
    label = browser.find_element(By.ID, "label").text
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
    names = [bar.find_element(By.CLASS_NAME, "name").text for bar in bars]
    assert names == list(LABELS) and label in LABELS
    shares = [float(bar.get_attribute("aria-valuenow")) for bar in bars]
    assert abs(sum(shares) - 100) < 0.5 and max(shares) == shares[names.index(label)]
    # Drawn as the numbers say: each bar's fill is its share of the track, in pixels.
    for bar, share in zip(bars, shares, strict=True):
        track = bar.find_element(By.CLASS_NAME, "track").size["width"]
        fill = bar.find_element(By.CLASS_NAME, "fill").size["width"]
        assert track > 50 and abs(fill - track * share / 100) <= 2, (share, fill, track)
    assert re.match(r"Answered in \d+\.\d ms", browser.find_element(By.ID, "timing").text)
    assert browser.find_element(By.LINK_TEXT, "API docs").get_attribute("href").endswith("/docs")


def test_the_page_says_what_is_wrong_in_words(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{server.url}/")
    browser.find_element(By.ID, "submit").click()  # an empty box
    error = browser.find_element(By.ID, "error")
    wait_until(browser, lambda d: error.text)
    assert error.text == "Please type some text first."
    assert not browser.find_element(By.ID, "result").is_displayed()
    # Over the server's 2,000-character limit: its 422, said in words.
    browser.execute_script("document.getElementById('text').value = 'news '.repeat(500)")
    browser.find_element(By.ID, "submit").click()
    wait_until(browser, lambda d: "too long" in error.text)
    # An example headline (a button) fills the box and answers.
    browser.find_element(By.CSS_SELECTOR, ".example").click()
    wait_until(browser, lambda d: d.find_element(By.ID, "result").is_displayed())
    assert error.text == ""


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, parsed by prometheus-client: (name, labels) -> value."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_move_with_the_requests_sent(server, texts):
    before = scrape(server.url)
    for text in texts[:5]:
        assert httpx.post(f"{server.url}/predict", json={"text": text}).status_code == 200
    for bad in ("", "   "):
        assert httpx.post(f"{server.url}/predict", json={"text": bad}).status_code == 422
    after = scrape(server.url)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    route = {"method": "POST", "route": "/predict"}
    assert moved("distrinews_requests_total", **route, status="200") == 5
    assert moved("distrinews_requests_total", **route, status="422") == 2
    assert moved("distrinews_request_duration_seconds_count", route="/predict") == 7
    assert moved("distrinews_inference_duration_seconds_count") == 5
    assert moved("distrinews_tokens_per_text_count") == 5
    assert moved("distrinews_tokens_per_text_sum") >= 5 * 3  # [CLS] a word [SEP] at least
    assert after[("distrinews_requests_in_flight", ())] == 1  # this scrape
    (info,) = [labels for name, labels in after if name == "distrinews_model_info"]
    assert dict(info)["labels"] == ",".join(LABELS) and dict(info)["source"]


def test_each_request_gets_an_id_and_one_json_log_line_without_its_text(server):
    text = "Quarterly profits beat forecasts at the bank"
    echoed = httpx.post(
        f"{server.url}/predict", json={"text": text}, headers={"X-Request-ID": "t-42"}
    )
    assert echoed.headers["x-request-id"] == "t-42"
    made = httpx.post(f"{server.url}/predict", json={"text": text})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    hostile = httpx.get(f"{server.url}/health", headers={"X-Request-ID": "a\tb" * 100})
    assert hostile.headers["x-request-id"] != "a\tb" * 100  # not echoed: replaced
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    (entry,) = [line for line in lines if line["request_id"] == "t-42"]
    assert entry["route"] == "/predict" and entry["status"] == 200 and entry["method"] == "POST"
    assert entry["text_chars"] == len(text) and entry["label"] == echoed.json()["label"]
    assert 0 < entry["latency_ms"] < 10_000 and entry["time"].endswith("+00:00")
    assert text not in server.output()
