"""The web page as users run it: `python -m impasto.web` in a subprocess with the shipped style. Its API over HTTP
(photos, bad uploads, two users at once), and the page itself in headless Chromium (Debian's chromium and
chromium-driver, which README's test command installs)."""

import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from conftest import ROOT
from impasto import ASSETS
from impasto.lookup import SHIPPED_STYLES, header_meta
from impasto.web.__main__ import parse_args, style_folders

pytestmark = pytest.mark.slow  # starts the server in a subprocess


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server on a free port, offering the shipped paintings (one file of several); its base URL."""
    styles = tmp_path_factory.mktemp("styles")
    shutil.copy(SHIPPED_STYLES / "paintings.safetensors", styles)
    process = subprocess.Popen([sys.executable, "-m", "impasto.web", "--port", "0", "--checkpoints", str(styles),
                                "--device", "cpu", "--max-upload-mb", "2"],
                               cwd=ROOT, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    address = re.search(r"http://[\d.]+:\d+", line)
    assert address, line + process.stderr.read()
    # Drain the log, or a full pipe would block the server.
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(process.stderr), daemon=True).start()
    yield address.group(0)
    process.terminate()
    process.wait(timeout=30)


def post(url: str, data: bytes, headers: dict | None = None) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def upload(server: str, data: bytes, name: str = "photo.jpg") -> tuple[int, dict]:
    status, _, body = post(f"{server}/api/photos", data, {"X-Filename": name})
    return status, json.loads(body)


def stylize(server: str, photo: str, **options) -> tuple[int, Message, bytes]:
    body = json.dumps({"photo": photo, "style": "starry_night", **options}).encode()
    return post(f"{server}/api/stylize", body, {"Content-Type": "application/json"})


def test_a_photo_comes_back_stylized_at_its_size_and_a_remix_is_quick(server):
    status, photo = upload(server, (ASSETS / "preview" / "coffee.jpg").read_bytes())
    assert status == 200 and (photo["width"], photo["height"]) == (512, 341)
    status, headers, body = stylize(server, photo["id"], size=256)
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(body)).size == (256, 170)
    assert "256x170, in one pass" in headers["X-Impasto-Note"]
    status, headers, again = stylize(server, photo["id"], size=256, strength=0.5, keep_colors=True)
    assert status == 200 and "remixed" in headers["X-Impasto-Note"] and again != body


def test_two_users_at_once_both_get_their_results(server):
    photos = [upload(server, (ASSETS / "preview" / f"{name}.jpg").read_bytes())[1] for name in ("chelsea", "coffee")]
    results: dict[int, tuple] = {}

    def ask(i: int) -> None:
        results[i] = stylize(server, photos[i]["id"], size=200)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sizes = [Image.open(io.BytesIO(results[i][2])).size for i in range(2)]
    assert [results[i][0] for i in range(2)] == [200, 200] and sizes == [(200, 133), (200, 133)]


def test_a_pass_that_waited_says_so_and_its_seconds_leave_the_wait_out(server):
    """Two full-size passes asked at once: one runs while the other waits, and the waiting one's caption names the
    wait apart from the pass's own seconds."""
    photos = [upload(server, (ASSETS / "preview" / f"{name}.jpg").read_bytes())[1] for name in ("astronaut", "coffee")]
    notes: dict[int, str] = {}

    def ask(i: int) -> None:
        status, headers, _ = stylize(server, photos[i]["id"], style="udnie")
        notes[i] = f"{status} {headers['X-Impasto-Note']}"

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    waited = [re.search(r", ([\d.]+) s after ([\d.]+) s in the queue,", note) for note in notes.values()]
    assert all(note.startswith("200 ") for note in notes.values()) and sum(map(bool, waited)) == 1, notes
    own, wait = map(float, next(filter(None, waited)).groups())
    assert wait >= 0.1 and own > 0, notes


@pytest.mark.parametrize("data, status, needle", [
    (b"not an image at all", 422, "not a readable image"),
    ((ASSETS / "preview" / "coffee.jpg").read_bytes()[:3000], 422, "truncated"),
    (b"\xff" * (3 * 2**20), 413, "upload limit of 2 MB"),
    (b"", 400, "empty"),
], ids=["text", "truncated", "too-large", "empty"])
def test_a_bad_upload_gets_a_message_not_a_traceback(server, data, status, needle):
    got, answer = upload(server, data, "bad.jpg")
    assert got == status and needle in answer["error"], answer
    assert "Traceback" not in answer["error"]


def test_the_page_offers_the_shipped_styles_from_any_folder_after_the_trained_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert style_folders(parse_args([])) == [SHIPPED_STYLES]  # no checkpoints/ here: no error for a missing one
    (tmp_path / "checkpoints").mkdir()
    assert style_folders(parse_args(["--styles", "mine"])) == [Path("checkpoints"), Path("mine"), SHIPPED_STYLES]
    assert style_folders(parse_args(["--checkpoints", "gone"]))[0] == Path("gone")  # named: checked, then refused


def test_a_file_name_outside_latin1_comes_back_in_the_message(server):
    status, body = upload(server, b"not a photo", urllib.parse.quote("фото.jpg"))
    assert status == 422 and "фото.jpg is not a readable image" in body["error"]


def test_a_photo_over_the_pixel_limit_is_refused_unread_and_the_message_names_the_limit(server, tmp_path):
    from test_data import declared_png

    data = declared_png(tmp_path / "big.png", 9000, 8000).read_bytes()
    status, body = upload(server, data, "big.png")
    assert status == 413 and body["error"] == "big.png is 9000x8000, 72 megapixels: this server takes photos up to " \
                                             "50 megapixels"


def test_memory_stays_bounded_under_concurrent_large_uploads():
    """8 clients at once each upload a 36-megapixel PNG and stylize it (scripts/bench.py web, its own server): the
    server's peak stays within 1 GiB over its idle size (3.3 GiB over before pixels were bounded: docs/benchmarks.md),
    and every client gets its picture."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "web", "--requests", "8",
                             "--concurrency", "8", "--megapixels", "36"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    load = json.loads(result.stdout.splitlines()[-1])
    assert load["failed"] == 0 and load["peak_mb"] - load["idle_mb"] < 1024, load


def test_a_bad_stylize_request_gets_a_message(server):
    assert stylize(server, "forgotten")[0] == 410  # the page uploads it again
    photo = upload(server, (ASSETS / "preview" / "coffee.jpg").read_bytes())[1]
    status, _, body = stylize(server, photo["id"], strength=3)
    assert status == 400 and "between 0 and 1" in json.loads(body)["error"]
    status, _, body = post(f"{server}/api/stylize", b"{broken json")
    assert status == 400 and "needs JSON" in json.loads(body)["error"]
    status, _, body = post(f"{server}/api/stylize", b'{"photo": "x", "style": "udnie", "size": 1e400}')
    assert status == 400 and "needs JSON" in json.loads(body)["error"]
    status, _, body = stylize(server, photo["id"], blend={"with": "mona_lisa", "weight": 0.5})
    assert status == 422 and "not a painting of starry_night's file" in json.loads(body)["error"]


def test_the_shipped_paintings_are_offered_by_name_and_blend_with_each_other(server):
    with urllib.request.urlopen(f"{server}/api/styles", timeout=60) as response:
        styles = {s["name"]: s for s in json.loads(response.read())["styles"]}
    assert {"starry_night", "the_scream", "great_wave", "composition_vii", "udnie", "shipwreck_minotaur"} <= set(styles)
    assert "the_scream" in styles["starry_night"]["blends_with"]
    shipped = {p["name"]: p["images"] for p in header_meta(SHIPPED_STYLES / "paintings.safetensors")["paintings"]}
    assert {name: styles[name]["images"] for name in shipped} == shipped  # each painting's own training images
    photo = upload(server, (ASSETS / "preview" / "chelsea.jpg").read_bytes())[1]
    results = {}
    for weight in (0.0, 0.5, 1.0):
        status, _, body = stylize(server, photo["id"], size=128, blend={"with": "the_scream", "weight": weight})
        assert status == 200
        results[weight] = Image.open(io.BytesIO(body)).convert("RGB")
    status, _, scream = post(f"{server}/api/stylize", json.dumps({"photo": photo["id"], "style": "the_scream",
                                                                  "size": 128}).encode())
    assert status == 200
    difference = [ImageChops.difference(results[0.5], results[w]).getbbox() for w in (0.0, 1.0)]
    assert all(difference)  # the middle of the blend is neither painting
    assert ImageChops.difference(results[1.0], Image.open(io.BytesIO(scream)).convert("RGB")).getbbox() is None


def chromium_and_driver() -> tuple[str, str]:
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if not all(found):
        pytest.fail("the browser test needs Debian's chromium and chromium-driver: apt-get install -y chromium "
                    "chromium-driver (README's test command does)")
    return found


@pytest.mark.browser
def test_the_page_in_a_real_browser(server, tmp_path):
    """Upload a photo, pick a style, move the strength, wait for the result, check its size; a screenshot."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser, driver_path = chromium_and_driver()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    wait = WebDriverWait(driver, 240)
    try:
        driver.get(server)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".style img"))
        Select(driver.find_element(By.ID, "size")).select_by_value("1024")
        photo = tmp_path / "фото 写真.jpg"  # a name outside Latin-1, which a header cannot carry as it is
        shutil.copy(ASSETS / "preview" / "coffee.jpg", photo)
        driver.find_element(By.ID, "file").send_keys(str(photo))
        wait.until(lambda d: "Photo, 512" in d.find_element(By.ID, "original-caption").text)
        starry = driver.find_element(By.CSS_SELECTOR, ".style[data-style='starry_night']")
        assert re.fullmatch(r"starry_night \([\d,]+ training images\)", starry.get_attribute("title"))
        starry.click()
        wait.until(lambda d: "strength 1.00" in d.find_element(By.ID, "result-caption").text)
        slider = driver.find_element(By.ID, "strength")
        slider.send_keys(Keys.ARROW_LEFT, Keys.ARROW_LEFT, Keys.ARROW_LEFT, Keys.ARROW_LEFT)
        wait.until(lambda d: "strength 0.80" in d.find_element(By.ID, "result-caption").text)
        caption = driver.find_element(By.ID, "result-caption").text
        size = driver.execute_script("const r = document.getElementById('result');"
                                     "return r.complete ? [r.naturalWidth, r.naturalHeight] : null")
        assert size == [512, 341], size  # 1024 px caps the long side; this photo is smaller, so its own size
        assert "remixed" in caption and driver.find_element(By.ID, "error").text == ""
        Select(driver.find_element(By.ID, "blend-with")).select_by_value("the_scream")  # a blend of two paintings
        wait.until(lambda d: "starry_night and the_scream (0.50)" in d.find_element(By.ID, "result-caption").text)
        link = driver.find_element(By.ID, "download")
        assert link.is_displayed() and link.get_attribute("download") == "фото 写真_starry_night.jpg"
        shot = Path(tmp_path / "page.png")
        driver.save_screenshot(str(shot))
        assert Image.open(shot).size[0] >= 1000
        if target := os.environ.get("IMPASTO_SCREENSHOT"):  # for docs/web.md's picture
            shutil.copy(shot, target)
        too_large = tmp_path / "huge.jpg"
        too_large.write_bytes(b"\xff" * (3 * 2**20))
        driver.find_element(By.ID, "file").send_keys(str(too_large))
        wait.until(lambda d: "upload limit of 2 MB" in d.find_element(By.ID, "error").text)
    finally:
        driver.quit()
