"""`plugen demo`: its JSON API on a small trained shapes-vae plugin (and a moses-vae one), then the page itself in a
headless Chromium (Debian's package; .ci/run installs it): choose attributes, press Generate, and the judge reads the
images shown; upload an image and move a control, and the edit follows."""
import base64
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from plugen_core import demo, usage
from plugen_core.datasets import shapes as shapes_data
from plugen_core.samples import decode_png, png_bytes
from tests.conftest import stop_group
from tests.test_registry import BIN, wait_until_up
from tests.test_tracking import free_port
from tests.trained_plugin import REQUEST, joint_agreement, shapes_judge, shared_moses_plugin, shared_shapes_plugin

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# this machine's network is closed: a browser that tries to reach anything would only wait
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,1000"]
GREEN_TRIANGLE = {"shape": "triangle", "colour": "green", "size": 8.0, "x": 16.0, "hollow": 0, "light_background": 0, "y": 16.0}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return shared_shapes_plugin(tmp_path_factory)


@pytest.fixture(scope="module")
def judge():
    return shapes_judge()


def client_for(workspace: Path, experiment: str, monkeypatch) -> TestClient:
    monkeypatch.chdir(workspace)
    return TestClient(demo.create_app(demo.Models({experiment: lambda: usage.from_pipeline(experiment)})))


def green_triangle_png() -> bytes:
    return png_bytes(shapes_data.render(pd.DataFrame([GREEN_TRIANGLE]), 32)[0])


def test_the_api_generates_what_is_asked_and_edits_an_upload(shapes, judge, monkeypatch):
    client = client_for(shapes, "shapes-vae", monkeypatch)
    assert client.get("/api/models").json() == ["shapes-vae"]
    described = client.get("/api/models/shapes-vae").json()
    assert described["modality"] == "images"
    assert [a["kind"] for a in described["attributes"]] == ["categorical", "categorical", "continuous", "continuous", "binary", "binary"]
    assert "PluGeN" in client.get("/").text

    answer = client.post("/api/generate", json={"model": "shapes-vae", "settings": REQUEST, "n": 16, "seed": 0})
    assert answer.status_code == 200, answer.text
    samples = answer.json()["samples"]
    images = np.stack([decode_png(s["image"]) for s in samples])
    assert joint_agreement(judge.predict(images), REQUEST) >= 0.8
    assert all(s["drawn"]["colour"] == "blue" and s["drawn"]["light_background"] == 1 for s in samples)

    upload = "data:image/png;base64," + base64.b64encode(green_triangle_png()).decode()
    edited = client.post("/api/edit", json={"model": "shapes-vae", "input": upload, "settings": {"colour": "red"}}).json()
    assert judge.predict(decode_png(edited["edited"]["image"])[None])["colour"][0] == "red"
    assert judge.predict(decode_png(edited["reconstruction"]["image"])[None])["colour"][0] == "green"
    assert edited["readout"]["colour"] == "green"


@pytest.mark.parametrize("request_body, message", [
    ({"model": "nope"}, "unknown model 'nope'"),
    ({"model": "shapes-vae", "settings": {"colour": "purple"}}, "colour=purple: not a class of 'colour'"),
    ({"model": "shapes-vae", "settings": {"size": 50}}, "size=50: outside the range the plugin was trained on"),
    ({"model": "shapes-vae", "settings": {"color": "red"}}, "unknown attribute 'color'"),
    ({"model": "shapes-vae", "input": "data:image/png;base64,bm90IGFuIGltYWdl"}, "the uploaded image: not a readable image"),
    ({"model": "shapes-vae", "input": "CCO"}, "the uploaded image is not base64 data"),
])
def test_the_api_answers_bad_input_with_the_line_the_command_prints(shapes, request_body, message, monkeypatch):
    client = client_for(shapes, "shapes-vae", monkeypatch)
    answer = client.post("/api/edit" if "input" in request_body else "/api/generate", json=request_body)
    assert answer.status_code == 400 and message in answer.json()["detail"]


@pytest.mark.slow
def test_the_api_draws_molecules_with_their_properties(tmp_path_factory, monkeypatch):
    client = client_for(shared_moses_plugin(tmp_path_factory), "moses-vae", monkeypatch)
    samples = client.post("/api/generate", json={"model": "moses-vae", "settings": {"logp": 3.0}, "n": 4, "seed": 0}).json()["samples"]
    valid = [s for s in samples if s["smiles"]]
    assert valid and all(s["image"].startswith("data:image/png;base64,") for s in valid)  # RDKit's drawings
    assert all(set(s["properties"]) == {"logp", "qed", "sas", "mw"} for s in valid)
    edited = client.post("/api/edit", json={"model": "moses-vae", "input": "CCOC(=O)c1ccccc1", "settings": {"logp": 3.0}}).json()
    assert edited["input"]["smiles"] == "CCOC(=O)c1ccccc1" and "logp" in edited["readout"]
    answer = client.post("/api/edit", json={"model": "moses-vae", "input": "C1CC(", "settings": {}})
    assert answer.status_code == 400 and "'C1CC(': not a valid SMILES" in answer.json()["detail"]


@contextmanager
def browser(profile: Path):
    """Headless Chromium driven by chromedriver, both Debian's (never a download), with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def demo_server(workspace: Path, log: Path, *args: str):
    """`plugen demo` in the workspace on a free loopback port; yields its URL and the seconds it took to answer."""
    port = free_port()
    began = time.monotonic()
    with log.open("ab") as out:
        command = [str(BIN / "plugen"), "demo", "--port", str(port), *args]
        proc = subprocess.Popen(command, cwd=workspace, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/api/models", proc, log, timeout=60)
        yield url, time.monotonic() - began
    finally:
        stop_group(proc, signal.SIGTERM, 5)


def choose(driver, settings: dict) -> None:
    """Set each attribute through its own control, as a person would; moving a control ticks its "set" box."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    for name, value in settings.items():
        control = driver.find_element(By.ID, f"value-{name}")
        if control.tag_name == "select":
            Select(control).select_by_value(str(value))
        elif control.get_attribute("type") == "checkbox":
            if control.is_selected() != bool(value):
                control.click()
        assert driver.find_element(By.ID, f"set-{name}").is_selected(), name


def generate_on_page(driver) -> tuple[list, float]:
    """Press Generate; the images shown and the seconds the page took from the click to drawing them."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("delete document.getElementById('samples').dataset.seconds")  # set again when this Generate is drawn
    driver.find_element(By.ID, "generate").click()
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "samples").get_attribute("data-seconds"))
    images = [decode_png(img.get_attribute("src")) for img in driver.find_elements(By.CSS_SELECTOR, "#samples img")]
    return images, float(driver.find_element(By.ID, "samples").get_attribute("data-seconds"))


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists() or not CHROMEDRIVER.exists(), reason="needs Debian's chromium and chromium-driver (.ci/run)")
def test_the_page_in_a_browser_generates_and_edits_what_is_chosen(shapes, judge, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with demo_server(shapes, tmp_path / "demo.log", "--experiment", "shapes-vae") as (url, ready_s), browser(tmp_path / "chromium") as driver:
        driver.get(url)
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        choose(driver, REQUEST)
        images, seconds = generate_on_page(driver)
        print(f"[demo] server answered {ready_s:.1f} s after start; the first Generate drew 16 images {seconds:.2f} s after the click")
        assert len(images) == 16 and joint_agreement(judge.predict(np.stack(images)), REQUEST) >= 0.8
        assert seconds <= 2.0

        (tmp_path / "green.png").write_bytes(green_triangle_png())
        driver.find_element(By.ID, "edit-file").send_keys(str(tmp_path / "green.png"))
        choose(driver, {"colour": "red"})  # the edit is redrawn as the control moves
        WebDriverWait(driver, 30).until(lambda d: '"colour":"red"' in d.find_element(By.ID, "status").text)
        edited = driver.find_elements(By.CSS_SELECTOR, "#edit figure img")[-1]
        assert judge.predict(decode_png(edited.get_attribute("src"))[None])["colour"][0] == "red"
        assert driver.save_screenshot(str(tmp_path / "demo.png"))
