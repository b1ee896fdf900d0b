"""The arena in a real browser: headless Chromium ranks K images, submits, sees the leaderboard move,
and the votes survive a SIGKILL and restart of the server.

Skips when Debian's chromium / chromium-driver or selenium are absent (`apt-get install chromium
chromium-driver`; selenium is in the dev extra). No browser or driver is downloaded: both paths are
given to selenium explicitly. EVFARM_ARENA_SCREENSHOTS=DIR also writes the README's screenshots
(arena_vote.png, arena_leaderboard.png) there.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cluster.arena_app import Arena, ArenaAppConfig
from sims.arena_images import procedural_images, write_folder

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (dev extra)")
pytestmark = pytest.mark.skipif(not (CHROMIUM.is_file() and DRIVER.is_file()),
                                reason="needs Debian's chromium and chromium-driver in /usr/bin "
                                       "(apt-get install chromium chromium-driver)")
MODELS = {"clean": 0.0, "light-noise": 0.08, "blurred": 0.12, "noisy": 0.18, "very-noisy": 0.32}


def start_server(models: Path, store: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "cluster.cli", "arena", "serve", "--models", str(models),
                             "--store", str(store), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        if "arena listening on " in line:
            return proc, line.split("arena listening on ")[1].strip()
    raise AssertionError("the arena server did not start")


def browser(profile: Path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1000,640"):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=Service(executable_path=str(DRIVER)))


def wait_for(cond, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting in the browser")


def test_rank_submit_leaderboard_and_restart_in_chromium(tmp_path):
    from selenium.webdriver.common.by import By

    models, store = tmp_path / "models", tmp_path / "store"
    write_folder(models, procedural_images(MODELS, n_prompts=4, size=40), upscale=4)
    prior = Arena(models, store, ArenaAppConfig(bootstrap_rounds=50))  # a board with some history
    rng = np.random.default_rng(0)
    order = list(MODELS)
    for i in range(40):
        m = prior.match()
        ranks = [order.index(x) for x in m["models"]]
        ranks = list(np.argsort(np.argsort(np.array(ranks) + rng.normal(0, 0.6, len(ranks)))))
        prior.vote(f"prior-{i}", f"prior{i}", m["prompt"], m["models"], [int(r) for r in ranks], "rank")
    prior.store.close()
    shots = Path(os.environ.get("EVFARM_ARENA_SCREENSHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    proc, url = start_server(models, store)
    driver = browser(tmp_path / "profile")
    try:
        driver.get(url + "/")
        def loaded(n_matches: int):
            """The images of the page's n-th match, once every one is served and decoded."""
            if driver.find_element(By.TAG_NAME, "body").get_attribute("data-matches") != str(n_matches):
                return None
            imgs = driver.find_elements(By.CSS_SELECTOR, "img.candidate")
            done = "return arguments[0].complete && arguments[0].naturalWidth > 0"
            return imgs if imgs and all(driver.execute_script(done, i) for i in imgs) else None

        imgs = wait_for(lambda: loaded(1))
        assert len(imgs) == 4  # K images, every one served and decoded
        submit = driver.find_element(By.ID, "submit")
        for img in imgs:
            assert not submit.is_enabled()  # a rank vote needs all K clicks
            img.click()
        captions = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "figcaption")]
        assert captions == ["1", "2", "3", "4"]
        driver.save_screenshot(str(shots / "arena_vote.png"))
        submit.click()
        wait_for(lambda: "vote #41 recorded" in driver.find_element(By.ID, "status").text)
        # pick-best mode on the next match
        driver.find_element(By.ID, "mode-best").click()
        wait_for(lambda: loaded(2))[2].click()
        driver.find_element(By.ID, "submit").click()
        wait_for(lambda: "vote #42 recorded" in driver.find_element(By.ID, "status").text)
        driver.get(url + "/leaderboard")
        wait_for(lambda: driver.find_element(By.ID, "total-votes").text == "42")
        rows = driver.find_elements(By.CSS_SELECTOR, "#board tbody tr")
        assert len(rows) == 5 and rows[0].get_attribute("data-model") == "clean"
        driver.save_screenshot(str(shots / "arena_leaderboard.png"))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc, url2 = start_server(models, store)
        driver.get(url2 + "/leaderboard")
        wait_for(lambda: driver.find_element(By.ID, "total-votes").text == "42")
    finally:
        driver.quit()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)
