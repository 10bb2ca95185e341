"""`trm serve` as a person meets it: the real server as a subprocess on a free loopback port, its page in
headless Chromium (Debian's `chromium` and `chromium-driver`, which scripts/setup.sh installs), a real 9x9
puzzle typed in, Solve pressed, the streamed steps watched, and the rendered grid compared with the API's
answer. The model is an untrained 9x9 one (sudoku9-cpu's shape): the test checks what the page shows, not
that the model is right. TRM_SERVE_CHECKPOINT serves another checkpoint instead, TRM_SERVE_PUZZLE types another
puzzle, TRM_SERVE_SCREENSHOT saves the page there too (docs/serve.png: a trained sudoku9-cpu model on a puzzle
of its held-out split)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from trm.config import build_train_config
from trm.models import build_model
from trm.tasks.sudoku import generate, split_puzzles

REPO = Path(__file__).resolve().parents[1]
PUZZLES = REPO.parent / "shared" / "data" / "sudoku" / "puzzles3_magictour_top1465"


def _browser() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip(
            "no chromium / chromedriver: scripts/setup.sh installs Debian's chromium and chromium-driver with "
            "apt-get, which needs root and the Debian package archive"
        )
    return chromium, driver


def real_puzzle() -> tuple[str, str]:
    """The first magictour puzzle from shared/data, or (where CI has no shared folder) a generated one."""
    if os.environ.get("TRM_SERVE_PUZZLE"):
        return os.environ["TRM_SERVE_PUZZLE"], "TRM_SERVE_PUZZLE"
    if PUZZLES.is_file():
        return split_puzzles(PUZZLES.read_text().splitlines())[0], f"{PUZZLES.name}, puzzle 1"
    puzzle = generate(1, 9, np.random.default_rng(0))[0][0]
    return "".join(str(v) if v else "." for v in puzzle), f"generated ({PUZZLES} is absent)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The URL of `trm serve` on a 9x9 checkpoint, running until the module's tests are done."""
    ckpt = os.environ.get("TRM_SERVE_CHECKPOINT")
    if not ckpt:
        ckpt = tmp_path_factory.mktemp("serve") / "sudoku9"
        build_model(build_train_config("sudoku9-cpu").model).save_pretrained(ckpt)
        (ckpt / "task.json").write_text(json.dumps({"task": "sudoku", "size": 9}))
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trm.cli", "serve", str(ckpt), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"trm serve did not come up:\n{log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_solves_a_typed_puzzle_step_by_step(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    puzzle, source = real_puzzle()
    print(f"puzzle: {puzzle} ({source})")
    api = httpx.post(f"{server}/solve", json={"task": "sudoku", "puzzle": puzzle}, timeout=60).json()
    browser.get(server + "/")
    wait = WebDriverWait(browser, 60)
    cells = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#editor input.cell") or False)
    assert len(cells) == 81
    for cell, ch in zip(cells, puzzle, strict=True):
        if ch != ".":
            cell.send_keys(ch)  # typed, as a person would (focus then moves to the next cell)
    assert "".join(c.get_attribute("value") or "." for c in cells) == puzzle
    browser.find_element(By.ID, "solve").click()
    wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-state") in ("done", "invalid"))

    shown = [c.text.strip() or "." for c in browser.find_elements(By.CSS_SELECTOR, "#out .cell")]
    assert "".join(shown) == api["answer"], browser.find_element(By.ID, "error").text
    assert browser.find_element(By.ID, "out").get_attribute("data-answer") == api["answer"]
    steps = browser.find_elements(By.CSS_SELECTOR, "#steps li")  # one line per streamed step
    assert len(steps) == api["steps"] == len(api["trace"])
    assert steps[-1].text.startswith(f"step {api['steps']} · halt {api['trace'][-1]['halt_probability']:.3f}")
    status = browser.find_element(By.ID, "status").text
    assert f"after {api['steps']} steps" in status and ("not a valid" in status) != api["valid"]
    out = browser.find_elements(By.CSS_SELECTOR, "#out .cell")
    assert [("given" in c.get_attribute("class")) for c in out] == [ch != "." for ch in puzzle]

    browser.save_screenshot(str(tmp_path / "serve.png"))
    if os.environ.get("TRM_SERVE_SCREENSHOT"):
        shutil.copy(tmp_path / "serve.png", os.environ["TRM_SERVE_SCREENSHOT"])
    assert (tmp_path / "serve.png").stat().st_size > 10_000


def test_the_page_shows_the_servers_refusal(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    wait = WebDriverWait(browser, 30)
    cells = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#editor input.cell") or False)
    cells[0].send_keys("5")
    cells[1].send_keys("5")  # the same digit twice in row 1
    browser.find_element(By.ID, "solve").click()
    error = wait.until(lambda d: d.find_element(By.ID, "error").text or False)
    assert "contradictory givens: digit 5 twice in row 1" in error
    assert browser.find_element(By.ID, "status").get_attribute("data-state") == "invalid"
