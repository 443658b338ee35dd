"""The web page of ``deepfeat serve`` in a real headless browser (Debian's chromium + selenium)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import sample_photo
from PIL import Image
from serve_models import free_port, start_server

from deepfeat.classify import load

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
    reason=f"needs Debian's chromium and chromedriver ({CHROMIUM}, {DRIVER})",
)


@pytest.fixture(scope="module")
def server(tiny_model_path):
    model = tiny_model_path
    port = free_port()
    proc = start_server([str(model)], port)
    yield f"http://127.0.0.1:{port}/", model
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--window-size=1100,800",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


def test_upload_a_photo_and_read_the_label_from_the_page(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, model_path = server
    photo = tmp_path / "chelsea.jpg"
    Image.fromarray(sample_photo("chelsea")).save(photo, quality=92)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    want = str(load(model_path).predict([str(photo)])[0])

    browser.get(url)
    WebDriverWait(browser, 30).until(lambda d: "classes" in d.find_element(By.ID, "model").text)
    assert "dark, light" in browser.find_element(By.ID, "model").text
    browser.find_element(By.ID, "file").send_keys(f"{photo}\n{broken}")
    wait = WebDriverWait(browser, 60)
    label = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "[data-role=label]")))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "[data-role=error]")))
    assert label.text.split()[0] == want
    # each answer sits in the card of the image that caused it
    cards = browser.find_elements(By.CSS_SELECTOR, ".card")
    names = [c.find_element(By.CSS_SELECTOR, ".name").text for c in cards]
    assert names == ["chelsea.jpg", "broken.png"]  # in the order chosen
    by_name = dict(zip(names, cards))
    assert by_name["chelsea.jpg"].find_elements(By.CSS_SELECTOR, "[data-role=label]")
    assert "not a recognized image format" in by_name["broken.png"].text or "corrupt PNG" in by_name["broken.png"].text
    assert len(by_name["chelsea.jpg"].find_elements(By.CSS_SELECTOR, ".bar")) == 2
    wait.until(lambda d: "classified" in d.find_element(By.ID, "status").text)
    assert "1 classified, 1 could not be classified" in browser.find_element(By.ID, "status").text
    shot = tmp_path / "serve-page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("DEEPFEAT_SCREENSHOT")
    if keep:
        shutil.copy(shot, Path(keep))
