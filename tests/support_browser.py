"""Headless Chromium for tests: the rendered DOM, a screenshot, and a PNG decoder.

Only the standard library: the PNG decoder is ``zlib`` plus ``struct``, the
DOM reader is :class:`html.parser.HTMLParser`.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

__all__ = [
    "CHROMIUM_INSTALL",
    "ChartDom",
    "PageDom",
    "PngImage",
    "TraceDom",
    "chromium_path",
    "decode_png",
    "dump_dom",
    "parse_page",
    "screenshot",
]

CHROMIUM_INSTALL = "apt-get update && apt-get install -y chromium"
"""What installs the browser on Debian (``make test`` needs it)."""

# No network, no first-run or background work: the page must render from the file alone.
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--force-color-profile=srgb",
    "--hide-scrollbars",
)
_TIMEOUT_SECONDS = 120


def chromium_path() -> str:
    """The ``chromium`` executable; fails the test (never skips it) when it is missing."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        f"headless Chromium is required to check the HTML report but `chromium` is not on "
        f"PATH; install it with: {CHROMIUM_INSTALL}",
        pytrace=False,
    )


def _run(page: Path, *arguments: str) -> bytes:
    executable = chromium_path()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [
            executable,
            *_FLAGS,
            f"--user-data-dir={profile}",
            *arguments,
            page.resolve().as_uri(),
        ]
        result = subprocess.run(command, capture_output=True, timeout=_TIMEOUT_SECONDS, check=False)
    if result.returncode != 0:
        raise AssertionError(
            f"chromium exited {result.returncode}: {' '.join(command)}\n"
            f"{result.stderr.decode(errors='replace')[-3000:]}"
        )
    return result.stdout


def dump_dom(page: Path) -> str:
    """The DOM of ``page`` after Chromium parsed and laid it out, serialised."""
    return _run(page, "--dump-dom").decode()


def screenshot(page: Path, png: Path, width: int = 1200, height: int = 2000) -> bytes:
    """A PNG of the first ``width`` x ``height`` pixels of ``page``; returns its bytes."""
    _run(page, f"--screenshot={png}", f"--window-size={width},{height}")
    if not png.exists():
        raise AssertionError(f"chromium wrote no screenshot to {png}")
    return png.read_bytes()


# --------------------------------------------------------------------------- PNG


@dataclass(frozen=True)
class PngImage:
    """A decoded 8-bit PNG as RGBA rows."""

    width: int
    height: int
    rgba: bytes

    def colours(self) -> Counter[tuple[int, int, int]]:
        """How many pixels have each RGB colour (alpha ignored)."""
        data = self.rgba
        return Counter(zip(data[0::4], data[1::4], data[2::4], strict=True))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel


def decode_png(data: bytes) -> PngImage:
    """Decode a non-interlaced 8-bit grey, grey+alpha, RGB or RGBA PNG (what Chromium writes)."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    position = len(_PNG_SIGNATURE)
    header: tuple[int, ...] = ()
    compressed = bytearray()
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed += body
        elif kind == b"IEND":
            break
    width, height, depth, colour_type, _, _, interlace = header
    if depth != 8 or interlace or colour_type not in _CHANNELS:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour_type}")
    channels = _CHANNELS[colour_type]
    stride = width * channels
    raw = zlib.decompress(bytes(compressed))
    rows = _unfilter(raw, height, stride, channels)
    return PngImage(width, height, _to_rgba(rows, channels))


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> bytes:
    out = bytearray(height * stride)
    previous = bytearray(stride)
    for row in range(height):
        start = row * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = previous[i]
                c = previous[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                predictor = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + predictor) & 0xFF
        elif kind != 0:
            raise ValueError(f"bad PNG filter type {kind} in row {row}")
        out[row * stride : (row + 1) * stride] = line
        previous = line
    return bytes(out)


def _to_rgba(pixels: bytes, channels: int) -> bytes:
    if channels == 4:
        return pixels
    if channels == 3:
        rgba = bytearray(len(pixels) // 3 * 4)
        for offset in range(3):
            rgba[offset::4] = pixels[offset::3]
        rgba[3::4] = b"\xff" * (len(pixels) // 3)
        return bytes(rgba)
    grey = pixels[::channels]
    alpha = pixels[1::2] if channels == 2 else b"\xff" * len(grey)
    rgba = bytearray(len(grey) * 4)
    for offset in range(3):
        rgba[offset::4] = grey
    rgba[3::4] = alpha
    return bytes(rgba)


# --------------------------------------------------------------------------- DOM


@dataclass
class TraceDom:
    """One plotly trace (``<g class="trace ...">``) of a chart and the paths drawn in it."""

    classes: list[str]
    paths: list[dict[str, str]] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """``scatter`` (lines and dots) or ``bars``."""
        return self.classes[1] if len(self.classes) > 1 else ""

    def marks(self) -> list[dict[str, str]]:
        """Paths with something to paint: a dot, a bar, a line with a segment."""
        return [attrs for attrs in self.paths if _paints(attrs.get("d", ""))]

    def colours(self) -> set[tuple[int, int, int]]:
        """The fill and stroke colours of its marks, white (bar outlines) left out."""
        found: set[tuple[int, int, int]] = set()
        for attrs in self.marks():
            style = attrs.get("style", "").replace(" ", "")
            for red, green, blue in _RGB.findall(style):
                found.add((int(red), int(green), int(blue)))
        found.discard((255, 255, 255))
        return found


@dataclass
class ChartDom:
    """One chart ``<div class="plot">``: its attributes, plotly's traces, legend and text."""

    attrs: dict[str, str]
    traces: list[TraceDom] = field(default_factory=list)
    legend: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    svg_count: int = 0

    @property
    def series_count(self) -> int:
        """The ``data-series-count`` the page declares."""
        return int(self.attrs["data-series-count"])


@dataclass
class PageDom:
    """The charts of a page by id, and what the page would load or run."""

    charts: dict[str, ChartDom]
    scripts: list[dict[str, str]]
    references: list[tuple[str, str, str]]
    """``(tag, attribute, value)`` of every ``src``/``href``/``data`` attribute."""


_RGB = re.compile(r"(?:fill|stroke):rgb\((\d+),(\d+),(\d+)\)")


def _paints(d: str) -> bool:
    # "M x,y" alone is an empty line; anything more draws a segment, an arc or a bar.
    return any(command in d for command in "LAVHZ")


class _ChartParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.charts: dict[str, ChartDom] = {}
        self.scripts: list[dict[str, str]] = []
        self.references: list[tuple[str, str, str]] = []
        self._stack: list[str] = []
        self._chart: ChartDom | None = None
        self._trace: TraceDom | None = None
        self._trace_depth = 0
        self._legend_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key: value or "" for key, value in attrs}
        if tag == "script":
            self.scripts.append(values)
        self.references += [
            (tag, key, value) for key, value in values.items() if key in ("src", "href", "data")
        ]
        if tag == "div" and "data-series-count" in values:
            self._chart = ChartDom(values)
            self.charts[values.get("id", f"plot-{len(self.charts)}")] = self._chart
            self._stack = ["div"]
            return
        if self._chart is None or tag in _VOID:
            return
        self._stack.append(tag)
        classes = values.get("class", "").split()
        if tag == "svg":
            self._chart.svg_count += 1
        elif tag == "g" and classes[:1] == ["trace"]:
            self._trace = TraceDom(classes)
            self._trace_depth = len(self._stack)
            self._chart.traces.append(self._trace)
        elif tag == "path" and self._trace is not None:
            self._trace.paths.append(values)
        elif tag == "text" and "legendtext" in classes:
            self._legend_depth = len(self._stack)
            self._chart.legend.append("")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._chart is None or not self._stack or tag in _VOID:
            return
        if self._trace is not None and len(self._stack) == self._trace_depth:
            self._trace = None
        if len(self._stack) == self._legend_depth:
            self._legend_depth = 0
        self._stack.pop()
        if not self._stack:
            self._chart = None

    def handle_data(self, data: str) -> None:
        if self._chart is None:
            return
        if self._legend_depth:
            self._chart.legend[-1] += data
        if data.strip():
            self._chart.text.append(data.strip())


_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta"})


def parse_page(page_html: str) -> PageDom:
    """The chart ``<div>`` elements of a page by id, its scripts and its references."""
    parser = _ChartParser()
    parser.feed(page_html)
    parser.close()
    return PageDom(parser.charts, parser.scripts, parser.references)
