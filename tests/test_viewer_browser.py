"""`p2g view` in a real headless Chromium (WebGL2 via SwiftShader): the page's render is the library's render.

Skipped, with the reason, only where no Chromium / chromedriver / selenium can be found (`.ci/run` installs
Chromium when missing). The screenshot goes to $P2G_TEST_ARTIFACTS (default: the test's temporary folder).
"""

from __future__ import annotations

import base64
import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gaussian_field import render
from tests.viewer_fields import field, lr, shifted  # noqa: F401  (fixtures)
from workflows.viewer.content import content_for_field
from workflows.viewer.headless import BrowserUnavailable, chromium, open_viewer, save_screenshot
from workflows.viewer.server import ViewerServer

WINDOW = (480, 360)
LEVEL = 1 / 255


@pytest.fixture(scope="module")
def url(field, lr):
    server = ViewerServer(content_for_field(field, lr, {"title": "astronaut_crop.npz", "bicubic_of": "the LR image"}))
    server.start_background()
    yield server.url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    try:
        with chromium(*WINDOW) as driver:
            yield driver
    except BrowserUnavailable as err:
        pytest.skip(f"no headless browser for the viewer tests: {err}")


@pytest.fixture()
def page(browser, url):
    info = open_viewer(browser, url)
    assert info["renderTarget"] == "float32", info
    return browser


def floats(b64: str, height: int, width: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), np.float32).reshape(height, width, 4)[..., :3]


def reference_view(field, scale: float, origin, size) -> np.ndarray:
    """gaussian_field.render of the window whose top-left corner is the LR point `origin`, as (H, W, 3)."""
    with torch.no_grad():
        image = render(shifted(field, origin), size=size, scale=scale)
    return image[0].permute(1, 2, 0).numpy()


def bicubic_view(lr: np.ndarray, scale: float, origin, size) -> np.ndarray:
    """Keys bicubic (a = -0.5, edges repeated, black outside) of the 8-bit LR at the page's sample points."""
    lr8 = np.round(lr * 255) / 255

    def weights(count, start, lr_count):
        u = start + (np.arange(count) + 0.5) / scale - 0.5
        base = np.floor(u)
        matrix = np.zeros((count, lr_count))
        for j in range(-1, 3):
            x = np.abs(u - (base + j))
            w = np.where(x <= 1, (1.5 * x - 2.5) * x * x + 1, np.where(x < 2, ((-0.5 * x + 2.5) * x - 4) * x + 2, 0))
            np.add.at(matrix, (np.arange(count), np.clip(base + j, 0, lr_count - 1).astype(int)), w)
        return matrix

    wy, wx = weights(size[0], origin[1], lr.shape[0]), weights(size[1], origin[0], lr.shape[1])
    image = np.clip(np.einsum("ri,ijc,sj->rsc", wy, lr8, wx), 0, 1)
    ys = origin[1] + (np.arange(size[0]) + 0.5) / scale
    xs = origin[0] + (np.arange(size[1]) + 0.5) / scale
    inside = ((ys >= 0) & (ys < lr.shape[0]))[:, None] & ((xs >= 0) & (xs < lr.shape[1]))[None, :]
    return image * inside[..., None]  # black outside the LR image, as the field fades out there


def view(driver) -> dict:
    return driver.execute_script("return p2g.getView()")


def render_view(driver, mode: str = "field") -> np.ndarray:
    width, height = view(driver)["size"]
    return floats(driver.execute_script("return p2g.renderView(arguments[0])", mode), height, width)


def png_of_data_url(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text.split(",", 1)[1]))).convert("RGB")).astype(int)


@pytest.mark.parametrize("scale", [2, 3.7, 8, (3, 5)])
def test_webgl_render_equals_the_library_render(page, field, scale):
    s_h, s_w = scale if isinstance(scale, tuple) else (scale, scale)
    height, width = round(field.h * s_h), round(field.w * s_w)
    got = floats(
        page.execute_script("return p2g.render(arguments[0], arguments[1], arguments[2])", width, height, [s_h, s_w]),
        height,
        width,
    )
    with torch.no_grad():
        expected = render(field, scale=(s_h, s_w))[0].permute(1, 2, 0).numpy()
    assert np.abs(got - expected).max() <= 2 * LEVEL


def test_tiled_drawing_gives_the_same_render_and_skips_tiles_out_of_view(browser, url, field):
    one = floats(open_viewer(browser, url) and browser.execute_script("return p2g.render(59, 44, [3.7, 3.7])"), 44, 59)
    info = open_viewer(browser, url + "?tile=3")
    assert info["tiles"] == 4 * 6
    tiled = floats(browser.execute_script("return p2g.render(59, 44, [3.7, 3.7])"), 44, 59)
    assert np.abs(tiled - one).max() < 1e-5
    browser.execute_script("p2g.render(16, 16, [4, 4], [0, 0])")  # LR [0, 4) x [0, 4): a corner of the field
    assert 1 <= browser.execute_script("return p2g.info().tilesDrawn") < info["tiles"]


def test_wheel_zooms_about_the_cursor_and_the_view_is_the_library_render(page, field):
    page.execute_script("p2g.setView(2, [-1.5, -0.75])")
    before = view(page)
    cursor = (120, 90)
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    ActionChains(page).scroll_from_origin(ScrollOrigin.from_viewport(*cursor), 0, -300).perform()
    deadline = time.monotonic() + 10
    while view(page)["scale"] == before["scale"] and time.monotonic() < deadline:
        time.sleep(0.05)
    after = view(page)
    assert after["scale"] > 2.5
    for axis in (0, 1):  # the LR point under the cursor stays under it
        point_before = before["origin"][axis] + cursor[axis] / before["scale"]
        assert after["origin"][axis] + cursor[axis] / after["scale"] == pytest.approx(point_before, abs=1e-9)
    page.execute_script("p2g.draw()")
    assert page.find_element("id", "scale").text == f"x{after['scale']:.2f}"
    width, height = after["size"]
    expected = reference_view(field, after["scale"], after["origin"], (height, width))
    assert np.abs(render_view(page) - expected).max() <= 2 * LEVEL


def test_drag_pans_by_the_dragged_distance(page):
    from selenium.webdriver.common.action_chains import ActionChains

    page.execute_script("p2g.setView(4, [1, 1])")
    before = render_view(page)
    ActionChains(page).move_by_offset(200, 150).click_and_hold().move_by_offset(-40, -20).release().perform()
    after_view = view(page)
    assert after_view["scale"] == 4 and after_view["origin"] == pytest.approx([11, 6], abs=1e-9)
    after = render_view(page)
    # What was at pixel (r + 20, c + 40) is now at (r, c): the same LR points, so the same sums.
    assert np.abs(after[:-20, :-40] - before[20:, 40:]).max() < 1e-4
    ActionChains(page).reset_actions()


def test_two_finger_pinch_zooms_about_the_fingers_midpoint(page):
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    page.execute_script("p2g.setView(2, [-3, -2])")
    before = view(page)
    builder = ActionBuilder(page)
    fingers = [builder.add_pointer_input(interaction.POINTER_TOUCH, f"finger{i}") for i in (1, 2)]
    for finger, (start, end) in zip(fingers, [(200, 170), (260, 290)]):  # 60 px apart -> 120 px, midpoint 230
        finger.create_pointer_move(x=start, y=150)
        finger.create_pointer_down(button=0)
        finger.create_pointer_move(x=end, y=150, duration=200)
        finger.create_pointer_up(button=0)
    builder.perform()
    after = view(page)
    assert after["scale"] == pytest.approx(2 * before["scale"], rel=1e-6)
    for axis, at in ((0, 230), (1, 150)):  # the LR point between the fingers stays between them
        point_before = before["origin"][axis] + at / before["scale"]
        assert after["origin"][axis] + at / after["scale"] == pytest.approx(point_before, abs=1e-6)


def test_split_view_shows_the_field_left_and_bicubic_right_on_the_canvas(page, field, lr):
    page.execute_script("p2g.setView(3, [-0.5, -0.25])")
    page.find_element("id", "split").click()
    state = view(page)
    assert state["split"] and page.find_element("id", "labels").is_displayed()
    width, height = state["size"]
    split_x = state["splitX"]
    shown = render_view(page, "split")
    expected_field = np.clip(reference_view(field, 3, state["origin"], (height, width)), 0, 1)
    expected_bicubic = bicubic_view(lr, 3, state["origin"], (height, width))
    assert np.abs(shown[:, :split_x] - expected_field[:, :split_x]).max() <= 2 * LEVEL
    assert np.abs(shown[:, split_x:] - expected_bicubic[:, split_x:]).max() <= 2 * LEVEL
    page.execute_script("p2g.draw()")
    canvas = png_of_data_url(page.execute_script("return document.getElementById('view').toDataURL('image/png')"))
    assert np.abs(canvas - np.round(shown * 255)).max() <= 1  # what the canvas shows is that view, 8-bit
    page.find_element("id", "split").click()
    assert not view(page)["split"]


def test_save_view_downloads_the_view_as_png(page, tmp_path):
    page.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    page.execute_script("p2g.setView(3.7, [0.25, 0.5])")
    page.find_element("id", "save").click()
    expected_name = tmp_path / "astronaut_crop_view_x3.70.png"
    deadline = time.monotonic() + 20
    while not expected_name.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    saved = np.asarray(Image.open(expected_name).convert("RGB")).astype(int)
    shown = np.round(np.clip(render_view(page), 0, 1) * 255)
    assert saved.shape == shown.shape and np.abs(saved - shown).max() == 0


def test_screenshot_artefact_and_frame_times(page, tmp_path):
    page.execute_script("p2g.setView(7, [1.5, 0.5])")
    page.find_element("id", "split").click()
    times = page.execute_script("return p2g.frameTimes(3)")
    assert len(times) == 3 and all(t > 0 for t in times)
    page.execute_script("p2g.draw()")
    assert page.find_element("id", "frame").text.startswith("frame ")
    path = save_screenshot(page, Path(os.environ.get("P2G_TEST_ARTIFACTS") or tmp_path) / "viewer_split_x7.png")
    shot = np.asarray(Image.open(path).convert("RGB")).astype(float)
    assert shot.shape[1] == WINDOW[0] and shot.std() > 10  # a picture, not a blank page
    page.find_element("id", "split").click()
