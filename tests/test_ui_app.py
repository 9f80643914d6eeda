"""Every endpoint of `mlbook ui` through Starlette's TestClient, on a real project."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("jinja2")

from starlette.testclient import TestClient
from ui_helpers import make_project

from mlbook.project import Project
from mlbook.provenance.journal import read_journal
from mlbook.scaffold import init_project
from mlbook.ui.app import create_app


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, dict[str, str]]:
    return make_project(tmp_path_factory.mktemp("ui") / "proj")


@pytest.fixture
def client(built: tuple[Project, dict[str, str]]) -> Iterator[TestClient]:
    app = create_app(built[0], allowed_hosts=("testserver",))
    with TestClient(app) as test_client:
        yield test_client


def _token(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert found, "no CSRF token in the page"
    return found[1]


def test_runs_table(client: TestClient, built: tuple[Project, dict[str, str]]) -> None:
    _, ids = built
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    text = page.text
    assert all(run_id in text for run_id in ids.values())
    assert text.index(ids["other"]) < text.index(ids["narrow"])  # newest first
    assert "digits &lt;cnn&gt;" not in text  # titles only on the journal page
    # the running run (owned by this process) makes the table refresh itself
    assert 'hx-trigger="every 2s"' in text and "live: refreshing every 2 s" in text
    # columns kept in the URL, sort by a param, filter in the runs grammar
    page = client.get(
        "/", params={"cols": "version,params.width,min.loss", "sort": "-params.width"}
    )
    assert ">width" in page.text and "min" in page.text
    rows = re.findall(r'<td class="id"><a href="/runs/([^"]+)"', page.text)
    assert rows[:2] in ([ids["wide"], ids["broken"]], [ids["broken"], ids["wide"]])
    page = client.get("/", params={"q": "acc>0.9 experiment=E001", "sort": "acc"})
    rows = re.findall(r'<td class="id"><a href="/runs/([^"]+)"', page.text)
    assert rows == [ids["narrow"], ids["wide"]]
    assert "every 2s" not in page.text  # no running run on this page
    # keyset paging: follow the next links
    seen, url = [], "/?n=2&sort=version"
    while url:
        page = client.get(url.replace("&amp;", "&"))
        seen += re.findall(r'<td class="id"><a href="/runs/([^"]+)"', page.text)
        following = re.search(r'<a href="([^"]+)" rel="next">', page.text)
        url = following[1] if following else ""
    assert sorted(seen) == sorted(ids.values()) and len(seen) == 5


def test_bad_filter_shows_where(client: TestClient) -> None:
    page = client.get("/", params={"q": "experiment=E001 acc>>0.9"})
    assert page.status_code == 400
    assert "column 17: filter &#39;acc&gt;&gt;0.9&#39;: expected NAME OP VALUE" in page.text
    assert 'aria-invalid="true"' in page.text
    assert "^^^^^^^^" in page.text
    page = client.get("/", params={"q": "params.opt='sgd"})
    assert page.status_code == 400 and "the quote &#39; is never closed" in page.text
    page = client.get("/", params={"cols": "params.a b"})
    assert page.status_code == 400 and "column &#39;params.a b&#39;: not a run field" in page.text
    page = client.get("/", params={"after": "!!"})
    assert page.status_code == 400 and "page cursor" in page.text


def test_run_page_escapes_and_shows_everything(
    client: TestClient, built: tuple[Project, dict[str, str]]
) -> None:
    _, ids = built
    page = client.get(f"/runs/{ids['broken']}")
    assert page.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script>alert(1)" not in page.text
    assert "digits &lt;cnn&gt; &amp; friends" in page.text  # the journal step, escaped
    assert "Models/common/training.py" in page.text and "report.txt" in page.text
    assert "metadata:abc" in page.text and "torch" in page.text
    short = client.get(f"/runs/{ids['narrow'][:17]}")  # a unique prefix is enough
    assert short.status_code == 200 and ids["narrow"] in short.text
    missing = client.get("/runs/nope")
    assert missing.status_code == 404 and "no run &#39;nope&#39;" in missing.text


def test_run_files_stay_in_the_project(
    client: TestClient, built: tuple[Project, dict[str, str]]
) -> None:
    _, ids = built
    run = ids["narrow"]
    report = f"Models/outputs/E001/narrow/{run}/report.txt"
    got = client.get(f"/runs/{run}/files/{report}")
    assert got.status_code == 200 and got.text == "report of narrow\n"
    assert got.headers["content-type"] == "text/plain; charset=utf-8"
    assert got.headers["content-security-policy"].startswith("sandbox")
    assert client.get(f"/runs/{run}/files/Models/common/training.py").status_code == 200
    # (an HTTP client folds a plain ../ itself; encoded ones reach the server)
    for bad in ("%2e%2e/%2e%2e/etc/passwd", "Models/%2e%2e/%2e%2e/x", "%2Fetc%2Fpasswd"):
        refused = client.get(f"/runs/{run}/files/{bad}")
        assert refused.status_code == 400, bad
        assert "is outside the project; only its files are shown" in refused.text
    assert client.get(f"/runs/{run}/files/mlbook.toml").status_code == 404  # not recorded


def test_curves(client: TestClient, built: tuple[Project, dict[str, str]]) -> None:
    _, ids = built
    page = client.get("/curves", params={"runs": f"{ids['narrow']},{ids['wide']}"})
    assert page.status_code == 200 and 'data-keys="acc,loss"' in page.text
    assert client.get("/curves", params={"q": "experiment=E001"}).status_code == 200
    every = client.get("/curves", params={"q": ""}).text  # an empty filter plots every run
    assert all(run_id in every for run_id in ids.values())
    assert "Pick runs" in client.get("/curves").text
    data = client.get(
        "/api/curves",
        params={"runs": f"{ids['narrow']},{ids['wide']}", "keys": "loss", "buckets": "50"},
    ).json()["curves"]
    assert [(c["run"], c["key"]) for c in data] == [(ids["narrow"], "loss"), (ids["wide"], "loss")]
    narrow = data[0]
    assert len(narrow["x"]) <= 50 and narrow["points"] == 200
    assert max(narrow["high"]) == 50.0  # the spike survives downsampling
    timed = client.get(
        "/api/curves", params={"runs": ids["wide"], "keys": "acc", "x": "time"}
    ).json()["curves"][0]
    assert timed["low"] is None and len(timed["x"]) == 200  # small enough to send whole
    wrong_axis = client.get(
        "/api/curves", params={"runs": ids["wide"], "keys": "acc", "x": "epoch"}
    )
    assert wrong_axis.status_code == 400 and "x axis 'epoch'" in wrong_axis.json()["error"]
    bad = client.get("/api/curves", params={"runs": "nope", "keys": "loss"})
    assert bad.status_code == 404 and bad.json() == {
        "error": "no run 'nope'; list runs with `mlbook runs`"
    }


def test_compare_shows_the_code_diff(
    client: TestClient, built: tuple[Project, dict[str, str]]
) -> None:
    _, ids = built
    page = client.get("/compare", params={"runs": [ids["narrow"], ids["wide"], ids["other"]]})
    assert page.status_code == 200
    text = page.text
    assert '<span class="del">-    return lr * 1</span>' in text
    assert '<span class="add">+    return lr * 2  # doubled</span>' in text
    assert "metadata:def" in text and "+0.04" in text
    assert client.get("/compare", params={"runs": ids["narrow"]}).status_code == 400


def test_parallel(client: TestClient, built: tuple[Project, dict[str, str]]) -> None:
    page = client.get("/parallel", params={"metric": "acc"})
    assert page.status_code == 200 and 'data-metric="acc"' in page.text
    data = client.get("/api/parallel", params={"q": "experiment=E001", "metric": "acc"}).json()
    assert data["params"] == ["lr", "opt", "width"] and len(data["runs"]) == 4
    assert {r["value"] for r in data["runs"]} >= {0.91, 0.95}
    assert client.get("/parallel", params={"q": "lr<"}).status_code == 400
    assert client.get("/api/parallel", params={"q": "lr<"}).status_code == 400


def test_journal_edits_need_the_token_and_keep_hand_text(
    client: TestClient, built: tuple[Project, dict[str, str]]
) -> None:
    project, _ = built
    path = project.journal_path
    page = client.get("/journal")
    assert page.status_code == 200 and "digits &lt;cnn&gt; &amp; friends" in page.text
    token = _token(page.text)
    before = path.read_bytes()
    refused = client.post("/journal/E001/conclusions", data={"conclusions": "x", "csrf": "bad"})
    assert refused.status_code == 403 and path.read_bytes() == before
    other = TestClient(create_app(project, allowed_hosts=("testserver",)))
    assert other.post("/journal/E001/conclusions", data={"csrf": token}).status_code == 403
    digest = re.search(r'name="based_on" value="([0-9a-f]+)"', page.text)
    assert digest
    saved = client.post(
        "/journal/E001/conclusions",
        data={"csrf": token, "based_on": digest[1], "conclusions": "Width helps <a lot>."},
        follow_redirects=False,
    )
    assert saved.status_code == 303 and saved.headers["location"] == "/journal#E001"
    assert read_journal(path)[0].conclusions == "Width helps <a lot>."
    assert "Does width help?" in path.read_text()  # hand-written description kept
    # an edit based on the old text is refused, and the typed text comes back
    stale = client.post(
        "/journal/E001/conclusions",
        data={"csrf": token, "based_on": digest[1], "conclusions": "mine"},
        headers={"HX-Request": "true"},
    )
    assert stale.status_code == 409
    assert (
        "changed on disk since they were opened" in stale.text and ">mine</textarea>" in stale.text
    )
    assert read_journal(path)[0].conclusions == "Width helps <a lot>."
    # notes and status through the same code as the CLI, htmx gets the entry back
    noted = client.post(
        "/journal/E001/notes",
        data={"note": "wide wins"},
        headers={"HX-Request": "true", "X-CSRF-Token": token},
    )
    assert noted.status_code == 200 and "note added" in noted.text
    assert read_journal(path)[0].notes[-1].endswith(": wide wins")
    status = client.post("/journal/E001/status", data={"csrf": token, "status": "done"})
    assert status.status_code == 200 and read_journal(path)[0].status == "DONE"
    empty = client.post(
        "/journal/E001/notes", data={"csrf": token, "note": " "}, headers={"HX-Request": "true"}
    )
    assert empty.status_code == 400 and "the note is empty" in empty.text
    unknown = client.post("/journal/E404/status", data={"csrf": token, "status": "done"})
    assert unknown.status_code == 400 and "no entry for E404" in unknown.text


def test_an_empty_project_and_a_broken_journal(tmp_path: Path) -> None:
    project = init_project(tmp_path / "p").project
    project.journal_path.write_text("## [E1] x\n<!-- mlbook:steps E1 -->\n")
    client = TestClient(create_app(project, allowed_hosts=("testserver",)))
    assert "no runs recorded yet" in client.get("/").text
    page = client.get("/journal")
    assert page.status_code == 200 and "is never closed" in page.text
    assert "Pick runs" in client.get("/curves").text


def test_exports_page(client: TestClient) -> None:
    page = client.get("/exports")
    assert page.status_code == 200 and "no exports yet" in page.text


def test_guards(built: tuple[Project, dict[str, str]]) -> None:
    project, _ = built
    store = project.state_dir / "runs.sqlite"
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    loopback = TestClient(create_app(project), base_url="http://127.0.0.1:8765")
    assert loopback.get("/").status_code == 200
    assert TestClient(create_app(project), base_url="http://localhost").get("/").status_code == 200
    rebound = TestClient(create_app(project), base_url="http://evil.example:8765")
    refused = rebound.get("/")
    assert refused.status_code == 400 and "host 'evil.example:8765' is not allowed" in refused.text
    assert loopback.get("/static/vendor/uPlot-1.6.32.iife.min.js").status_code == 200
    assert loopback.get("/static/../app.py").status_code == 404
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before  # nothing written


def test_vendored_files_have_their_licences() -> None:
    vendor = Path(__import__("mlbook.ui", fromlist=["x"]).__file__).parent / "static" / "vendor"
    names = {p.name for p in vendor.iterdir()}
    assert {"uPlot-LICENSE.txt", "htmx-LICENSE.txt"} <= names
    assert "MIT License" in (vendor / "uPlot-LICENSE.txt").read_text()
