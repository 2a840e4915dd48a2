"""app.py and interactive/: which model it shows, the session (one Sampler, main_sample.py's
samples), and the app itself launched on a local port: through gradio's client, and in a headless
Chromium that sets the options, clicks Generate and finds the images on the page."""
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from digits_demo.report import has_ema
from interactive import config as app_config
from interactive.class_names import class_names
from interactive.session import MAX_COUNT, MIN_SHOWN, Session
from models import load_model
from models.sampler import Sampler
from sampling import figures
from sampling.config import SampleConfig
from sampling.plan import draw_images, plan_for

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
START_TIMEOUT = 120  # seconds for app.py to import gradio and torch and load the model, on a busy machine


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_the_model_shown_is_the_one_named_else_the_published_else_the_demo_s(tiny_dir, tmp_path, monkeypatch):
    published, demo = tmp_path / "pretrained_models" / "checkerboard-L-2x", tmp_path / "outputs" / "demo" / "generator"
    monkeypatch.setattr(app_config, "PUBLISHED_MODEL", published)
    monkeypatch.setattr(app_config, "DEMO_MODEL", demo)
    with pytest.raises(FileNotFoundError, match="download.sh checkerboard-L-2x.*python demo.py"):
        app_config.choose_model(None, False)
    copy_model(tiny_dir, demo)
    assert app_config.choose_model(None, False) == app_config.ModelChoice(str(demo), False,
                                                                           "the digits model of python demo.py")
    copy_model(tiny_dir, published)
    assert app_config.choose_model(None, False).path == str(published)
    assert app_config.choose_model("elsewhere", True) == app_config.ModelChoice("elsewhere", True, "--checkpoint")


def test_app_without_a_model_says_in_one_line_how_to_get_one(tmp_path, monkeypatch, capsys):
    import app
    monkeypatch.setattr(app_config, "PUBLISHED_MODEL", tmp_path / "none")
    monkeypatch.setattr(app_config, "DEMO_MODEL", tmp_path / "none")
    with pytest.raises(SystemExit) as stop:
        app.main(["--device", "cpu"])
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("app.py: error: no model to show: pass --checkpoint") and "python demo.py" in err


def test_class_names_imagenet_s_for_1000_classes_else_the_index():
    assert class_names(10) == [str(i) for i in range(10)]
    names = class_names(1000)
    assert len(names) == 1000 and names[207] == "207 golden retriever" and names[0] == "0 tench"


def test_a_session_reuses_one_sampler_and_draws_main_sample_s_samples(tiny_dir, monkeypatch):
    import interactive.session as session_module
    made = []

    class CountedSampler(Sampler):
        def __init__(self, *args, **kwargs):
            made.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(session_module, "Sampler", CountedSampler)
    model = load_model(tiny_dir)
    session = Session(model)
    for count, steps in ((3, "1,2,4,4"), (2, "2")):
        plan = session.plan([3, 7], count, 1.5, 1, steps, 1.0, 5)
        drawing = session.draw(plan)
        expected, _ = draw_images(Sampler(model), plan, list(range(count)), count, "cpu")
        zoom = MIN_SHOWN // model.config.img_size
        assert np.array_equal(drawing.images[:, ::zoom, ::zoom], expected)
        assert drawing.captions == ["3", "7", "3"][:count]
        blocks = session.sampler.schedule(list(plan.steps_per_scale)).block_bounds  # a 1x1 scale has one step
        assert len(drawing.frames) == len(drawing.frame_titles) == len(blocks)
        # the last step has every cell: the samples themselves
        assert np.array_equal(drawing.frames[-1], figures.image_grid(drawing.images))
        assert drawing.frame_titles[0] == f"1x1, step 1/1 (step 1 of {len(drawing.frames)})"
    assert len(made) == 1
    with pytest.raises(ValueError, match=f"count must be <= {MAX_COUNT}"):
        session.plan([], MAX_COUNT + 1, 1.5, 1, "4", 1.0, 0)
    with pytest.raises(ValueError, match="steps_per_scale"):
        session.plan([], 2, 1.5, 1, "0", 1.0, 0)


# ---------------------------------------------------------------- the app on a local port
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_model(request) -> Path:
    return Path(request.config.getoption("--app_model"))


@pytest.fixture(scope="module")
def app_url(app_model):
    """`python app.py --checkpoint <model> --port <free>` running; its address."""
    port = free_port()
    argv = [sys.executable, "app.py", "--checkpoint", str(app_model), "--device", "cpu", "--port", str(port)]
    if has_ema(app_model):
        argv.append("--use_ema")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, ready = [], threading.Event()

    def read():
        for line in process.stdout:
            lines.append(line)
            if "Running on local URL" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(START_TIMEOUT):
            pytest.fail(f"app.py did not start within {START_TIMEOUT} s: {''.join(lines)}")
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(30)


def expected_samples(model_dir: Path, classes, count, cfg, cfg_start_step, steps, temperature, seed) -> np.ndarray:
    """What main_sample.py draws for these options."""
    model = load_model(model_dir, use_ema=has_ema(model_dir))
    config = SampleConfig(classes=classes, num_samples=count, cfg=cfg, cfg_start_step=cfg_start_step,
                          steps_per_scale=steps, temperature=temperature, seed=seed)
    return draw_images(Sampler(model), plan_for(config, model), list(range(count)), count, "cpu")[0]


def test_gradio_client_draws_main_sample_s_samples_and_each_step(app_url, app_model):
    from gradio_client import Client
    client = Client(app_url, verbose=False)
    gallery, step, fill, step_maps, summary = client.predict(
        [3, 7], 4, 1.5, 1, "1,2,4,4", 1.0, 5, api_name="/generate")
    assert [item["caption"] for item in gallery] == ["3", "7", "3", "7"]
    images = np.stack([np.asarray(Image.open(item["image"]).convert("RGB")) for item in gallery])
    expected = expected_samples(app_model, [3, 7], 4, 1.5, 1, [1, 2, 4, 4], 1.0, 5)
    zoom = images.shape[1] // expected.shape[1]
    assert zoom * expected.shape[1] >= MIN_SHOWN
    assert np.array_equal(images, expected.repeat(zoom, axis=1).repeat(zoom, axis=2))
    assert step["maximum"] == step["value"] == 11
    assert fill["label"] == "8x8, step 4/4 (step 11 of 11)"
    assert np.array_equal(np.asarray(Image.open(fill["value"]).convert("RGB")), figures.image_grid(images))
    assert Image.open(step_maps).size[0] > images.shape[2]
    assert re.fullmatch(r"4 samples in [\d.]+ s \(11 steps, [\d.]+ s per sample, cpu\)", summary)
    # the step slider: the cells drawn so far
    assert client.predict(1, api_name="/show_step")["label"] == "1x1, step 1/1 (step 1 of 11)"
    third = client.predict(3, api_name="/show_step")
    assert third["label"] == "2x2, step 2/2 (step 3 of 11)"
    assert not np.array_equal(np.asarray(Image.open(third["value"]).convert("RGB")), figures.image_grid(images))
    # a bad setting: its one line, and the app keeps serving
    with pytest.raises(Exception, match="steps_per_scale must be >= 1, got 0"):
        client.predict([3], 2, 1.5, 1, "0", 1.0, 0, api_name="/generate")
    assert len(client.predict([], 2, 0.0, 0, "2", 0.0, 0, api_name="/generate")[0]) == 2


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium "
                                                  f"chromium-driver)")
def test_headless_chromium_sets_the_options_clicks_generate_and_finds_the_images(app_url, tmp_path, request):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1700"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)

    def wait_for(condition, what, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = condition()
            if found:
                return found
            time.sleep(0.2)
        pytest.fail(f"the page never showed {what}")

    def type_number(selector, value):
        field = browser.find_element(By.CSS_SELECTOR, selector)
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(str(value), Keys.TAB)

    def fill_label():
        return browser.find_element(By.CSS_SELECTOR, "#fill [data-testid=block-label]").text

    try:
        browser.get(app_url)
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#generate"), "the Generate button")
        picker = browser.find_element(By.CSS_SELECTOR, "#classes input")
        for digit in ("3", "7"):
            picker.click()
            picker.send_keys(digit)
            picker.send_keys(Keys.ENTER)
        picker.send_keys(Keys.ESCAPE)  # closes the list of choices
        assert [chip.text for chip in browser.find_elements(By.CSS_SELECTOR, "#classes .token")] == ["3", "7"]
        type_number("#count input[type=number]", 6)
        type_number("#seed input", 5)
        browser.find_element(By.CSS_SELECTOR, "#generate").click()

        loaded = "return arguments[0].complete && arguments[0].naturalWidth"

        def samples_shown():
            shown = [img for img in browser.find_elements(By.CSS_SELECTOR, "#samples img")
                     if browser.execute_script(loaded, img)]
            return shown if len(shown) == 6 else None

        images = wait_for(samples_shown, "6 samples")
        assert len(images) == 6 and all(browser.execute_script(loaded, img) >= MIN_SHOWN for img in images)
        assert [img.get_attribute("alt") for img in images] == ["3", "7"] * 3
        assert re.match(r"6 samples in [\d.]+ s", browser.find_element(By.CSS_SELECTOR, "#summary").text)
        last_scale_steps, total = map(int, re.fullmatch(r"\d+x\d+, step (\d+)/\1 \(step (\d+) of \2\)",
                                                         fill_label()).groups())
        assert browser.find_elements(By.CSS_SELECTOR, "#fill img") and browser.find_elements(
            By.CSS_SELECTOR, "#step_maps img")

        # the step slider back to the first step, then to the middle of the last scale
        type_number("#step input[type=number]", 1)
        wait_for(lambda: fill_label() == f"1x1, step 1/1 (step 1 of {total})", "the first step")
        middle = total - last_scale_steps // 2
        type_number("#step input[type=number]", middle)
        wait_for(lambda: f"(step {middle} of {total})" in fill_label(), f"step {middle}")
        screenshot = tmp_path / "app.png"
        assert browser.save_screenshot(str(screenshot))
    finally:
        browser.quit()
    assert Image.open(screenshot).size[0] >= 1000
    destination = request.config.getoption("--app_screenshot")
    if destination:
        shutil.copyfile(screenshot, destination)
