"""Headless Chromium for the tests of pages people look at: the DOM after scripts ran, and a
screenshot, each from one run of Debian's ``chromium`` on a loopback URL."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TYPE_CHECKING

import pytest
from PIL import Image

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

INSTALL_CHROMIUM = (
    "Chromium is not installed, and the landing-page tests load the page in a real browser. "
    "Install it with `sudo apt-get install --no-install-recommends chromium` "
    "(`make deps` does this when run as root), or put a `chromium` binary on PATH."
)
RUN_TIMEOUT_S = 60.0
WINDOW = (1280, 1500)
_VOID = frozenset(
    "area base br col embed hr img input link meta source track wbr".split()  # noqa: SIM905
)


def chromium_binary() -> str:
    """Chromium; fails (never skips) with install advice when missing."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found is not None:
            return found
    pytest.fail(INSTALL_CHROMIUM, pytrace=False)


@dataclass
class Element:
    """One element of a parsed page: tag, attributes, children and text."""

    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    content: list[Element | str] = field(default_factory=list)  # in document order

    @property
    def children(self) -> list[Element]:
        """The child elements, without the text between them."""
        return [c for c in self.content if isinstance(c, Element)]

    def walk(self) -> Iterator[Element]:
        """This element and every one below it, in document order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        """Elements below (and including) this one with the tag and attribute values.

        ``attr=""`` matches any value, ``data_x`` stands for ``data-x`` and ``class_`` for
        one of the element's classes.
        """
        wanted = {name.rstrip("_").replace("_", "-"): value for name, value in attrs.items()}
        return [
            e
            for e in self.walk()
            if (tag is None or e.tag == tag)
            and all(_matches(e.attrs, n, v) for n, v in wanted.items())
        ]

    def one(self, tag: str | None = None, **attrs: str) -> Element:
        """The single element that ``all`` finds; fails the test otherwise."""
        found = self.all(tag, **attrs)
        assert len(found) == 1, f"expected one <{tag or '*'} {attrs}>, found {len(found)}"
        return found[0]

    @property
    def text(self) -> str:
        """The element's text with its children's, whitespace collapsed."""
        parts = (c if isinstance(c, str) else c.text for c in self.content)
        return " ".join(" ".join(parts).split())


def _matches(attrs: dict[str, str], name: str, value: str) -> bool:
    if name not in attrs:
        return False
    if name == "class" and value:
        return value in attrs[name].split()
    return value in ("", attrs[name])


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document")
        self._stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self._stack[-1].content.append(element)
        if tag not in _VOID:
            self._stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self._stack) - 1, 0, -1):  # tolerate unclosed elements
            if self._stack[depth].tag == tag:
                del self._stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self._stack[-1].content.append(data)


def parse(html: str) -> Element:
    """The document tree of ``html``."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


@dataclass(frozen=True)
class Rendered:
    """A page as Chromium rendered it: its DOM after scripts ran, and a screenshot."""

    dom: Element
    screenshot: Path

    def colours(self) -> Counter[tuple[int, int, int]]:
        """How many pixels of the screenshot have each RGB colour."""
        with Image.open(self.screenshot) as image:
            data = image.convert("RGB").tobytes()
        return Counter(zip(data[0::3], data[1::3], data[2::3], strict=True))

    def size(self) -> tuple[int, int]:
        """The screenshot's width and height in pixels."""
        with Image.open(self.screenshot) as image:
            return image.size


def _run(argv: list[str], workdir: Path) -> str:
    completed = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
        cwd=workdir,
        env={**os.environ, "HOME": str(workdir)},  # its profile stays in the test's directory
    )
    if completed.returncode != 0:
        pytest.fail(f"{argv[0]} exited {completed.returncode}: {completed.stderr[-2000:]}")
    return completed.stdout


def render(url: str, workdir: Path, name: str, *, budget_ms: int = 1500) -> Rendered:
    """Load ``url`` in headless Chromium: the DOM once ``budget_ms`` of virtual time passed
    (timers run, fetches are awaited), and a screenshot as ``workdir/name.png``."""
    workdir.mkdir(parents=True, exist_ok=True)
    common = [
        chromium_binary(),
        "--headless",
        "--no-sandbox",  # root in CI, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--no-proxy-server",  # loopback only, whatever the environment says
        f"--user-data-dir={workdir / 'profile'}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--virtual-time-budget={budget_ms}",
    ]
    dom = _run([*common, "--dump-dom", url], workdir)
    screenshot = workdir / f"{name}.png"
    _run([*common, f"--screenshot={screenshot}", url], workdir)
    assert screenshot.is_file(), f"chromium wrote no screenshot for {url}"
    return Rendered(parse(dom), screenshot)
