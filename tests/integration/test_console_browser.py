"""The landing page in a real browser: headless Chromium loads it from a simulated exporter (DCGM
backend, standalone host engine) in the states an operator meets, and the rendered DOM and a
screenshot of each are checked.

With ``MIGEXPORTER_SCREENSHOTS`` set to a directory, the screenshots are also copied there; the
README's picture is the incident state of such a run (``make screenshots``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from browser import WINDOW, Element, Rendered, render
from harness import Service, free_port, start_exporter, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

TIMEOUT_S = 20.0
PAGE_RED = (0xC6, 0x28, 0x28)  # the page-severity colour of the console's stylesheet
UNKNOWN_GREY = (0x75, 0x75, 0x75)


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[Service]:
    """A fresh simulated node per test (default fleet), on the DCGM backend, so that its
    host engine can be stopped."""
    address = f"127.0.0.1:{free_port()}"
    service = start_exporter(tmp_path, "--backend", "dcgm", "--dcgm-address", address)
    yield service
    service.stop()


def load(exporter: Service, tmp_path: Path, name: str, *, budget_ms: int = 1500) -> Rendered:
    page = render(exporter.url + "/", tmp_path / "chromium", name, budget_ms=budget_ms)
    keep = os.environ.get("MIGEXPORTER_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(page.screenshot, Path(keep) / page.screenshot.name)
    return page


def gpu(dom: Element, index: int) -> Element:
    return dom.one("article", data_gpu=str(index))


def post(exporter: Service, path: str, body: dict[str, object]) -> None:
    reply = exporter.post(path, body)
    assert reply.status == 200, reply.body


def events(exporter: Service) -> list[dict[str, object]]:
    reply = exporter.get("/api/events")
    assert reply.status == 200
    result: list[dict[str, object]] = reply.json()
    return result


def test_a_healthy_node_is_all_ok_with_its_layout_free_slices_and_no_red(
    exporter: Service, tmp_path: Path
) -> None:
    page = load(exporter, tmp_path, "console-healthy", budget_ms=11_000)
    dom = page.dom
    main = dom.one("main")
    assert main.attrs["data-backend"] == "up"
    assert not dom.all(data_banner="")
    assert dom.one(data_simulated="true").text == "SIMULATED"
    meta = dom.one("p", class_="meta").text
    assert "backend dcgm" in meta
    assert "UTC" in dom.one(data_sampled="").text
    cards = dom.all("article")
    assert len(cards) == 3
    assert {c.attrs["data-state"] for c in cards} == {"ok"}
    # GPU 1 holds seven 1g instances: the strip covers the 8 memory slices, in placement order,
    # with the eighth slice drawn free.
    strip = gpu(dom, 1).one(class_="strip")
    cells = [c for c in strip.children if "data-start" in c.attrs]
    starts = [int(c.attrs["data-start"]) for c in cells]
    assert starts == sorted(starts)
    assert sum(int(c.attrs.get("data-span") or c.attrs["data-free"]) for c in cells) == 8
    assert len(strip.all(data_gi="")) == 7
    assert [int(c.attrs["data-free"]) for c in strip.all(data_free="")] == [1]
    # The table lists the instances in the same placement order as the strip.
    rows = [r.attrs["data-row-gi"] for r in gpu(dom, 1).all("tr", data_row_gi="")]
    assert rows == [c.attrs["data-gi"] for c in strip.all(data_gi="")]
    assert gpu(dom, 2).all(data_whole="true")  # the GPU without MIG is drawn whole
    assert "No driver events" in dom.text
    recovery = gpu(dom, 0).one("li", data_fact="recovery")
    assert (recovery.attrs["data-level"], recovery.text) == ("ok", "recovery none needed")
    # Nothing external: no scripts, styles or images from elsewhere (it must work air-gapped).
    for element in dom.walk():
        for attribute in ("src", "href"):
            assert not element.attrs.get(attribute, "/").startswith(("http:", "https:", "//"))
    assert not dom.all("link")
    assert all("src" not in s.attrs for s in dom.all("script"))
    # It refreshed itself twice in 11 s of (virtual) time, fetching the page anew each time.
    assert int(dom.one("body").attrs["data-refreshes"]) >= 2
    assert page.size() == WINDOW
    assert page.colours()[PAGE_RED] == 0


def test_an_xid_48_with_ecc_errors_and_a_reset_request_shows_on_the_instance_and_the_gpu(
    exporter: Service, tmp_path: Path
) -> None:
    post(exporter, "/api/sim/xid", {"gpu": 1, "gpu_instance_id": 7, "xid": 48})
    post(exporter, "/api/sim/ecc", {"gpu": 1, "uncorrected": True, "count": 2})
    post(exporter, "/api/sim/recovery", {"gpu": 1, "action": "gpu_reset"})
    wait_for(lambda: len(events(exporter)) >= 4 or None, TIMEOUT_S, what="the four events")

    def reset_shown() -> Rendered | None:
        page = load(exporter, tmp_path, "console-incident")
        fact = gpu(page.dom, 1).all("li", data_fact="recovery")
        return page if fact and "needs GPU reset" in fact[0].text else None

    page = wait_for(reset_shown, TIMEOUT_S, what="the recovery action on the page")
    card = gpu(page.dom, 1)
    assert card.attrs["data-state"] == "ok"  # the GPU still answers; what it needs is below
    assert card.one("li", data_fact="recovery").attrs["data-level"] == "page"
    ecc = card.one("li", data_fact="ECC")
    assert ecc.attrs["data-level"] == "ticket"
    assert "2 uncorrected" in ecc.text
    # The badge sits on GPU instance 7, in the strip and in its table row, and nowhere else.
    badged = card.one(class_="strip").one(data_gi="7")
    assert "XID 48" in badged.one(data_badge="page").text
    assert len(card.one(class_="strip").all(data_badge="")) == 1
    assert card.one("tr", data_row_gi="7").all(data_badge="page")
    assert not gpu(page.dom, 0).all(data_badge="")
    # The newest events first: the XID with its mnemonic and our severity.
    table = page.dom.one("table", data_events="")
    lines = [[td.text for td in row.all("td")] for row in table.all("tr")[1:]]
    xid = next(line for line in lines if line[3] == "XID 48")
    assert xid[1:3] == ["1", "7"]
    assert xid[4:6] == ["ROBUST_CHANNEL_GPU_ECC_DBE", "page"]
    assert sum(line[3] == "ECC uncorrected" for line in lines) == 2
    assert any(line[3] == "recovery action" and line[4] == "gpu_reset" for line in lines)
    assert page.colours()[PAGE_RED] > 500  # the badge, the recovery fact and the severity


def test_a_gpu_fallen_off_the_bus_is_lost_with_its_reason_and_the_others_stay_ok(
    exporter: Service, tmp_path: Path
) -> None:
    post(exporter, "/api/sim/fault", {"gpu": 0, "kind": "fall_off_bus"})

    def lost() -> Rendered | None:
        page = load(exporter, tmp_path, "console-lost")
        return page if gpu(page.dom, 0).attrs["data-state"] == "lost" else None

    page = wait_for(lost, TIMEOUT_S, what="GPU 0 shown lost")
    card = gpu(page.dom, 0)
    assert card.one(class_="word").text == "LOST"
    reason = card.one("p", data_reason="").text
    assert "since" in reason
    assert "lost" in reason.lower()
    assert [gpu(page.dom, i).attrs["data-state"] for i in (1, 2)] == ["ok", "ok"]
    assert not page.dom.all(data_banner="")
    assert page.colours()[PAGE_RED] > 500  # its word and border


def test_with_the_host_engine_down_a_banner_says_why_and_the_gpus_are_unknown_not_down(
    exporter: Service, tmp_path: Path
) -> None:
    post(exporter, "/api/sim/fault", {"kind": "hostengine_down"})
    wait_for(lambda: exporter.get("/-/ready").status == 503 or None, TIMEOUT_S, what="not ready")
    page = load(exporter, tmp_path, "console-backend-down")
    assert page.dom.one("main").attrs["data-backend"] == "down"
    banner = page.dom.one(data_banner="backend-down").text
    assert banner.startswith("Backend dcgm is down since")
    assert "ago" in banner
    assert "unknown" in banner
    cards = page.dom.all("article")
    assert {c.attrs["data-state"] for c in cards} == {"unknown"}
    assert {c.one(class_="word").text for c in cards} == {"UNKNOWN"}
    colours = page.colours()
    assert colours[UNKNOWN_GREY] > 500
    assert colours[PAGE_RED] > 5000  # the banner, not the GPUs

    post(exporter, "/api/sim/fault", {"kind": "hostengine_up"})
    wait_for(lambda: exporter.get("/-/ready").status == 200 or None, TIMEOUT_S, what="ready")
    page = load(exporter, tmp_path, "console-backend-back")
    assert not page.dom.all(data_banner="")
    assert {c.attrs["data-state"] for c in page.dom.all("article")} == {"ok"}


def test_a_reconfigured_gpu_shows_its_new_layout_without_a_restart(
    exporter: Service, tmp_path: Path
) -> None:
    post(exporter, "/api/sim/mig", {"gpu": 0, "profiles": ["3g.40gb"]})
    post(exporter, "/api/sim/mig", {"gpu": 2, "profiles": ["7g.80gb"]})

    def relaid() -> Rendered | None:
        page = load(exporter, tmp_path, "console-reconfigured")
        return page if gpu(page.dom, 2).all(data_gi="") else None

    page = wait_for(relaid, TIMEOUT_S, what="the new layouts")
    strip = gpu(page.dom, 0).one(class_="strip")
    [instance] = strip.all(data_gi="")
    assert "3g.40gb" in instance.text
    assert sum(int(c.attrs["data-free"]) for c in strip.all(data_free="")) == 4
    whole = gpu(page.dom, 2).one(class_="strip").one(data_gi="")
    assert whole.attrs["data-span"] == "8"
    assert "7g.80gb" in whole.text
    assert not gpu(page.dom, 2).all(data_whole="")
