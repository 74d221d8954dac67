"""End-to-end: real JupyterLab, driven in headless Chromium, runs every notebook of the course.

For each solution and student notebook (in a temporary copy, so the repository is never modified):
open it in JupyterLab, run all cells through JupyterLab's own command, save, and read the saved
file. Solutions must finish with no error output; student notebooks must stop at an exercise stub
(NotImplementedError or a failed check), never elsewhere; notebooks whose solutions show ipywidgets
must render widget DOM. A screenshot of each notebook is saved in artifacts/browser/.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); skipped with that reason
where they are missing.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from course_utils import exercises

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm's text
STUB_ERRORS = {"NotImplementedError", "CheckFailed", "NameError"}

MISSING = (
    "Debian's chromium and chromium-driver are not installed (`apt-get install chromium "
    "chromium-driver`; .ci/run does it)"
)
REQUIRED = (
    os.environ.get("RSL_REQUIRE_E2E") == "1"
)  # set by .ci/run: CI must not skip the browser run
pytestmark = [
    pytest.mark.slow,
    pytest.mark.e2e,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and not REQUIRED, reason=MISSING),
]
LESSONS = [p.name for p in exercises.lesson_paths()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on loopback serving a copy of solutions/ and notebooks/."""
    root = tmp_path_factory.mktemp("lab")
    for folder in ("solutions", "notebooks"):
        shutil.copytree(ROOT / folder, root / folder)
    port, token = _free_port(), secrets.token_hex(16)
    settings = root / ".lab-settings"
    notification = (
        settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    )
    notification.parent.mkdir(parents=True)
    notification.write_text(
        '{"fetchNews": "false", "checkForUpdates": false}'
    )  # no "get news?" prompt offline
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        JUPYTER_CONFIG_DIR=str(root / ".jupyter"),
        JUPYTER_RUNTIME_DIR=str(root / ".runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
    )
    log = open(root / "lab.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--allow-root",
            f"--ServerApp.token={token}",
            f"--ServerApp.root_dir={root}",
            "--expose-app-in-browser",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not start:\n{(root / 'lab.log').read_text()[-3000:]}")
            time.sleep(1)
    yield {"base": base, "token": token, "root": root}
    server.terminate()
    try:
        server.wait(20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail(f"RSL_REQUIRE_E2E=1 but {MISSING}")

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


_NOTEBOOK_READY = """
const app = window.jupyterapp;
const nb = app && app.shell.currentWidget;
const kernel = nb && nb.sessionContext && nb.sessionContext.session && nb.sessionContext.session.kernel;
return Boolean(kernel && kernel.status === 'idle' && nb.content && nb.content.widgets.length > 0);
"""

_START_RUN_ALL = """
window.__rslRunAll = null;
const app = window.jupyterapp;
app.commands.execute('notebook:run-all-cells')
  .then(ok => app.commands.execute('docmanager:save').then(() => { window.__rslRunAll = 'finished ' + ok; }))
  .catch(error => { window.__rslRunAll = 'error: ' + error; });
"""


def _poll(driver, script: str, timeout: float, what: str):
    """Run a short script every second until it returns something truthy (no long-blocking
    calls)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _scroll_to(driver, element) -> None:
    # twice: JupyterLab sizes cells outside the viewport lazily, so the first jump can land short
    for _ in range(2):
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        time.sleep(1)


def run_in_lab(
    driver, lab, relative_path: str, timeout: float = 600
) -> tuple[nbformat.NotebookNode, int]:
    """Open, run all, save; return the saved notebook and the number of rendered widget views."""
    from selenium.webdriver.common.by import By

    driver.get(f"{lab['base']}/lab/tree/{relative_path}?token={lab['token']}&reset")
    _poll(driver, _NOTEBOOK_READY, 240, f"{relative_path} to open with an idle kernel")
    driver.execute_script(_START_RUN_ALL)
    outcome = _poll(
        driver, "return window.__rslRunAll;", timeout, f"{relative_path} to run and save"
    )
    assert not outcome.startswith("error"), f"{relative_path}: {outcome}"
    rendered = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output .jupyter-widgets")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = str(ARTIFACTS / relative_path.replace("/", "__").removesuffix(".ipynb"))
    errors = driver.find_elements(
        By.CSS_SELECTOR, '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
    )
    if errors:  # a student notebook: show where it stopped (the first stub)
        _scroll_to(driver, errors[0])
    driver.save_screenshot(stem + ".png")  # else the end of the lesson
    if rendered:  # and the first live widget (a slider, a quiz), scrolled into view
        _scroll_to(driver, rendered[0])
        driver.save_screenshot(stem + "__widget.png")
    widgets = len(rendered)
    driver.execute_script("window.jupyterapp.commands.execute('kernelmenu:shutdown')")
    return nbformat.read(lab["root"] / relative_path, as_version=4), widgets


def _errors(nb):
    return [
        (index, output)
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.output_type == "error"
    ]


def _shows_widgets(nb) -> bool:
    """Whether the lesson displays interactive widgets (a slider, a quiz); progress bars do not
    count: they close themselves when their loop ends."""
    return any(
        WIDGET_MIME in output.get("data", {})
        and not PROGRESS_BAR.search(output["data"].get("text/plain", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


@pytest.mark.parametrize("name", LESSONS)
def test_solution_runs_clean_in_jupyterlab(lab, browser, name):
    nb, widgets = run_in_lab(browser, lab, f"solutions/{name}")
    errors = _errors(nb)
    assert errors == [], (
        f"{name}: error output in the browser run: {[(i, o.ename, o.evalue) for i, o in errors]}"
    )
    unexecuted = [
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is None
    ]
    assert unexecuted == [], f"{name}: cells not executed: {unexecuted}"
    if _shows_widgets(nbformat.read(ROOT / "solutions" / name, as_version=4)):
        assert widgets > 0, f"{name}: the lesson shows ipywidgets but none rendered in JupyterLab"


@pytest.mark.parametrize("name", LESSONS)
def test_student_notebook_stops_only_at_a_stub(lab, browser, name):
    nb, _ = run_in_lab(browser, lab, f"notebooks/{name}")
    errors = _errors(nb)
    assert errors, f"{name}: the student notebook ran to the end although its exercises are stubs"
    first_cell, first_error = errors[0]
    first_exercise = min(i for i, cell in enumerate(nb.cells) if exercises.is_exercise(cell))
    assert first_error.ename in STUB_ERRORS, (
        f"{name}: stopped at cell {first_cell} on {first_error.ename}: {first_error.evalue}"
    )
    assert first_cell >= first_exercise, (
        f"{name}: failed at cell {first_cell}, before the first exercise ({first_exercise})"
    )
