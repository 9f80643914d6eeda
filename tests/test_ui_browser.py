"""`mlbook ui` end to end in a real headless Chromium (Playwright driving Debian's chromium).

The server is the real command (`python -m mlbook ui --port 0`) on a free
loopback port. Screenshots go to ``$MLBOOK_UI_SCREENSHOTS`` when set (the
README's picture comes from there), else to pytest's temporary directory.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("starlette")
if not CHROMIUM.exists():
    if os.environ.get("CI"):
        pytest.fail("the browser tests need /usr/bin/chromium (apt-get install -y chromium)")
    pytest.skip("no /usr/bin/chromium (apt-get install -y chromium)", allow_module_level=True)

from ui_helpers import make_project  # noqa: E402

from mlbook.experiments.series import chunk_of  # noqa: E402
from mlbook.experiments.store import Store  # noqa: E402
from mlbook.project import Project  # noqa: E402
from mlbook.provenance.journal import read_journal  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Project, dict[str, str]]]:
    """The UI of a fresh project, served by `mlbook ui` in a child process."""
    project, ids = make_project(tmp_path_factory.mktemp("browser") / "proj")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlbook", "-C", str(project.root), "ui", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"on (http://127\.0\.0\.1:\d+/) \(this machine only", line)
    if not found:
        process.kill()
        raise AssertionError(f"no address from mlbook ui: {line!r} {process.stderr.read()!r}")
    try:
        yield found[1], project, ids
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
        assert process.stderr is not None
        process.stderr.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("MLBOOK_UI_SCREENSHOTS")
    folder = Path(wanted) if wanted else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    # bypass_csp lets Playwright evaluate its wait conditions; the pages' own scripts are
    # checked under the real policy in test_every_page_runs_under_the_csp
    context = browser.new_context(viewport={"width": 1280, "height": 860}, bypass_csp=True)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield tab
    context.close()
    assert [e for e in errors if "status of 400" not in e] == []


def test_every_page_runs_under_the_csp(
    site: tuple[str, Project, dict[str, str]], browser: Any
) -> None:
    url, _, ids = site
    context = browser.new_context()
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    two = f"{ids['narrow']},{ids['wide']}"
    for path, ready in [
        ("", "#runs"),
        (f"runs/{ids['narrow']}", ".charts[data-state='drawn']"),
        (f"curves?runs={two}", ".charts[data-state='drawn']"),
        (f"compare?runs={two}", "pre.diff"),
        ("journal", "article#E001"),
        ("parallel?metric=acc", "#parallel[data-state='drawn']"),
        ("exports", "h1"),
    ]:
        tab.goto(url + path)
        tab.wait_for_selector(ready)
    context.close()
    assert problems == []


def _rows(page: Any) -> list[str]:
    return [link.inner_text() for link in page.locator("#runs td.id a").all()]


def test_table_sort_filter_and_open_a_run(
    site: tuple[str, Project, dict[str, str]], page: Any, shots: Path
) -> None:
    url, _, ids = site
    page.goto(url)
    assert len(_rows(page)) == 5
    page.screenshot(path=str(shots / "runs.png"), full_page=True)
    page.get_by_role("link", name="version").click()
    page.wait_for_function("location.search.includes('sort=-version')")  # htmx pushState
    page.wait_for_function("document.querySelector('#runs td.id a') !== null")
    assert _rows(page)[0] == ids["wide"]  # versions descending: wide, other, narrow...
    page.fill("#q", "experiment=E001 acc>0.9")
    page.press("#q", "Enter")
    page.wait_for_function(
        "new URLSearchParams(location.search).get('q') === 'experiment=E001 acc>0.9'"
    )
    page.wait_for_function("document.querySelectorAll('#runs td.id a').length === 2")
    assert set(_rows(page)) == {ids["narrow"], ids["wide"]}
    page.fill("#q", "acc>>0.9")
    page.press("#q", "Enter")
    error = page.locator("#filter-error")
    error.wait_for()
    assert "column 1: filter 'acc>>0.9': expected NAME OP VALUE" in error.inner_text()
    page.screenshot(path=str(shots / "filter-error.png"))
    page.goto(url)
    page.get_by_role("link", name=ids["narrow"]).click()
    page.wait_for_url(re.compile(ids["narrow"]))
    assert "E001 / narrow" in page.locator("h1").inner_text()
    page.wait_for_selector(".charts[data-state='drawn'] canvas")
    assert page.locator("figure.chart").count() == 2
    page.screenshot(path=str(shots / "run.png"), full_page=True)


def test_plot_two_runs(site: tuple[str, Project, dict[str, str]], page: Any, shots: Path) -> None:
    url, _, ids = site
    page.goto(url)
    page.check(f"#pick-{ids['narrow']}")
    page.check(f"#pick-{ids['wide']}")
    page.get_by_role("button", name="Plot selected").click()
    page.wait_for_url(re.compile(r"/curves\?"))
    page.wait_for_selector(".charts[data-state='drawn']")
    assert page.locator("figure.chart canvas").count() == 2
    legend = page.locator("figure.chart[data-key='loss'] .u-legend").inner_text()
    assert "E001/narrow" in legend and "E001/wide" in legend
    page.check("input[name='logy']")
    page.wait_for_function(
        "document.querySelector('figure.chart figcaption').textContent.includes('log y')"
    )
    assert "logy=1" in page.url  # the view is kept in the URL
    page.screenshot(path=str(shots / "curves.png"), full_page=True)


def test_compare_two_runs_shows_the_code_diff(
    site: tuple[str, Project, dict[str, str]], page: Any, shots: Path
) -> None:
    url, _, ids = site
    page.goto(url)
    page.check(f"#pick-{ids['narrow']}")
    page.check(f"#pick-{ids['wide']}")
    page.get_by_role("button", name="Compare selected").click()
    page.wait_for_url(re.compile(r"/compare\?"))
    added = page.locator("pre.diff span.add")
    assert "return lr * 2  # doubled" in added.first.inner_text()
    assert page.locator("tr.differs").count() >= 2  # data version, opt, width
    page.screenshot(path=str(shots / "compare.png"), full_page=True)


def test_edit_a_conclusion(
    site: tuple[str, Project, dict[str, str]], page: Any, shots: Path
) -> None:
    url, project, _ = site
    page.goto(url + "journal")
    entry = page.locator("article#E001")
    entry.locator("textarea").fill("Wide beats narrow: 0.95 against 0.91.\nTry 128 next.")
    entry.get_by_role("button", name="Save conclusions").click()
    page.locator("article#E001 .saved").wait_for()
    [e001, _] = read_journal(project.journal_path)
    assert e001.conclusions == "Wide beats narrow: 0.95 against 0.91.\nTry 128 next."
    assert "Does width help?" in project.journal_path.read_text()
    page.screenshot(path=str(shots / "journal.png"), full_page=True)


def test_running_runs_refresh(site: tuple[str, Project, dict[str, str]], page: Any) -> None:
    url, project, ids = site
    page.goto(url + "?cols=version,status,last.loss&sort=version&q=status=running")
    cell = page.locator("#runs tbody tr td.num").first
    before = cell.inner_text()
    with Store.for_project(project) as store:
        pk = store.db.execute("SELECT pk FROM runs WHERE id = ?", (ids["live"],)).fetchone()[0]
        store.add_metrics(pk, [chunk_of("loss", [500], [0.0123], [time.time()])])
    page.wait_for_function(
        "document.querySelector('#runs tbody tr td.num').textContent.includes('0.0123')",
        timeout=8000,
    )
    assert before != cell.inner_text()


def test_parallel_coordinates_brush_filters_the_table(
    site: tuple[str, Project, dict[str, str]], page: Any, shots: Path
) -> None:
    url, _, _ = site
    page.goto(url + "parallel?metric=acc")
    page.wait_for_selector("#parallel[data-state='drawn']")
    page.wait_for_function("document.querySelectorAll('#runs td.id a').length === 5")
    box = page.locator("#parallel-canvas").bounding_box()
    width = page.evaluate("document.getElementById('parallel-canvas').width")
    # brush the top of the metric axis (the last one, 60 canvas pixels from the right
    # edge; the axis runs from 24 to 324 of 360): acc from 0.95 down to about 0.93
    x = box["x"] + box["width"] * (1 - 60 / width)
    page.mouse.move(x, box["y"] + box["height"] * 0.03)
    page.mouse.down()
    page.mouse.move(x, box["y"] + box["height"] * 0.1, steps=5)
    page.mouse.up()
    page.wait_for_function("document.querySelectorAll('#runs td.id a').length === 1")
    assert "acc>=0.95" in page.locator("#parallel-status").get_attribute("data-query")
    page.screenshot(path=str(shots / "parallel.png"), full_page=True)
