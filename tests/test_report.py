"""Reports: the text table, the self-contained HTML page (checked in a real browser when one is
installed) and the matplotlib PNG."""
from __future__ import annotations

import html.parser
import io
import os
import random
import re
import shutil
import struct
import subprocess
import sys

import pytest

from alloccount._units import format_rate
from alloccount.history import CATEGORY_FIELDS, History, Sample
from alloccount.leaks import CATEGORY_PREFIX, detect_leaks
from alloccount.report import RENDERERS, render

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no headless chromium (apt-get install chromium)")

LEAK_BACKGROUND_RGB = (0xFD, 0xE2, 0xE1)  # tr.leak / .banner.leak in the HTML report's CSS


def bot_history(n: int = 1_800, *, categories: tuple[str, ...] = ("orders", "prices")) -> History:
    """A trading bot's run: "orders" leaks 2 KB/s, "prices" is a bounded 5 MB cache sawtooth."""
    rng = random.Random(42)
    meta = {"command": ["python", "bot.py"], "start_time": 1.7e9, "interval_s": 1.0, "pid": 77}
    history = History(maxlen=None, meta=meta)
    cache = 0.0
    for i in range(n):
        cache = 0.0 if cache >= 5e6 else cache + 5e6 / 300 * rng.uniform(0.5, 1.5)
        current = {"orders": int(1e6 + 2_000 * i + rng.gauss(0, 2e4)), "prices": int(cache)}
        counters = {
            name: dict(zip(CATEGORY_FIELDS, (value, value, i * 10, i * 9, value + i * 100, i * 100)))
            for name, value in current.items()
            if name in categories
        }
        total = sum(c["current_bytes"] for c in counters.values())
        history.append(
            Sample(float(i), 1.7e9 + i, total, total, i * 20, i * 18, int(40e6 + 1.2 * total), counters)
        )
    return history


@pytest.fixture(scope="module")
def history() -> History:
    return bot_history()


@pytest.fixture(scope="module")
def verdicts(history):
    return detect_leaks(history, limits={"total": 100 * 2**20})


# --- render() ----------------------------------------------------------------------------------


def test_render_knows_its_formats():
    assert set(RENDERERS) == {"text", "html", "png"}
    with pytest.raises(ValueError, match="unknown report format 'pdf'; expected one of text, html, png"):
        render(History(), {}, "pdf")


@pytest.mark.parametrize("fmt, kind", [("text", str), ("html", str), ("png", bytes)])
def test_render_returns_the_report_and_writes_it_when_given_a_path(tmp_path, history, verdicts, fmt, kind):
    path = tmp_path / f"report.{RENDERERS[fmt].extension}"
    output = render(history, verdicts, fmt, path=path)
    assert isinstance(output, kind)
    written = path.read_bytes()
    assert written == (output.encode("utf-8") if isinstance(output, str) else output)
    assert os.listdir(tmp_path) == [path.name]  # no temporary left behind


def test_render_computes_the_verdicts_when_none_are_given(history):
    assert "LEAK  category:orders" in render(history, None, "text")


# --- text --------------------------------------------------------------------------------------


def test_text_report_shows_totals_categories_and_verdicts(history, verdicts):
    text = render(history, verdicts, "text")
    assert text.startswith("alloccount report: python bot.py (pid 77)\n")
    assert "started 2023-11-14 22:13:20 UTC · 1,800 samples every 1 s" in text
    # The latest sample's totals, in human units
    assert re.search(r"^  total +\d+\.\d MiB +\d+\.\d MiB +\d+\.\d MiB +35,980 +32,382$", text, re.M)
    # Leaking categories are marked and their growth rate shown
    assert re.search(r"^  orders ! .* \+2\.0 KiB/s$", text, re.M)
    # Leaks are listed first, with their reason
    verdict_lines = text.split("leak verdicts\n")[1].splitlines()
    assert verdict_lines[0].startswith("  LEAK  ")
    assert any(line.startswith("  ok    category:prices  ") for line in verdict_lines)
    assert "reaches 100.0 MiB in ~" in text


def test_text_report_columns_are_aligned(history, verdicts):
    text = render(history, verdicts, "text")
    table = text.split("\n\n")[2].splitlines()  # the categories table
    assert table[0].startswith("  category")
    # Numbers are right-aligned: every row ends its columns at the same offsets as the header.
    header_ends = [m.end() for m in re.finditer(r"\S+", table[0])][1:]
    for row in table[1:]:
        row_ends = [m.end() for m in re.finditer(r"\S+", row)]
        assert set(header_ends) <= set(row_ends), row


def test_text_report_of_an_empty_history():
    text = render(History(), {}, "text")
    assert "no samples recorded" in text


# --- HTML --------------------------------------------------------------------------------------


class _Collector(html.parser.HTMLParser):
    """Collects tags and attributes, and fails on unbalanced tags."""

    VOID = {"meta", "br", "img", "link", "input", "hr", "line", "rect", "polyline", "circle", "path"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>, open: {self.stack[-3:]}"
        self.stack.pop()


def parse(document: str) -> _Collector:
    collector = _Collector()
    collector.feed(document)
    collector.close()
    assert collector.stack == [], f"unclosed tags: {collector.stack}"
    return collector


def test_html_is_one_self_contained_well_formed_file(history, verdicts):
    document = render(history, verdicts, "html")
    tags = parse(document).tags
    names = [name for name, _ in tags]
    # No scripts, stylesheets, images or fonts fetched from anywhere
    assert "script" not in names and "link" not in names and "img" not in names
    assert "@import" not in document and "url(" not in document
    assert re.findall(r"https?://[^\"' ]+", document) == ["http://www.w3.org/2000/svg"] * 2  # SVG namespace only
    assert names.count("style") == 1
    assert names.count("svg") == 2  # memory per category, and RSS


def test_html_plots_every_category_the_total_and_rss(history, verdicts):
    document = render(history, verdicts, "html")
    titles = re.findall(r"<polyline [^>]*><title>([^<]*)</title>", document)
    # Leaking lines carry their verdict's growth rate in the legend.
    rate = {key: format_rate(verdict.slope_bytes_per_s) for key, verdict in verdicts.items()}
    assert titles == [
        f"total (leak: {rate['total']})",
        f"orders (leak: {rate[CATEGORY_PREFIX + 'orders']})",
        "prices",
        f"RSS (leak: {rate['rss']})",
    ]


def test_html_highlights_the_leaks(history, verdicts):
    document = render(history, verdicts, "html")
    assert '<p class="banner leak">3 leaks detected: category:orders, rss, total</p>' in document
    leak_rows = re.findall(r'<tr class="leak"><td>([^<]*)</td>', document)
    assert leak_rows == ["total", "orders", "category:orders", "rss", "total"]
    assert '<tr><td>category:prices</td><td>ok</td>' in document


def test_html_without_leaks_says_so():
    history = bot_history(categories=("prices",))
    verdicts = detect_leaks(history)
    assert not any(v.leaking for v in verdicts.values())
    assert '<p class="banner ok">No leak detected.</p>' in render(history, verdicts, "html")


def test_html_escapes_names_and_commands():
    history = bot_history(300)
    history.meta["command"] = "<script>alert(1)</script>"
    odd = History(maxlen=None, meta=history.meta)
    for sample in history:
        odd.append(Sample(**{**sample.__dict__, "categories": {"<b>&x": sample.categories["orders"]}}))
    document = render(odd, detect_leaks(odd), "html")
    assert "<script>" not in document and "<b>&x" not in document
    assert "&lt;b&gt;&amp;x" in document
    parse(document)


def test_html_thins_long_series_but_keeps_their_spikes():
    # GIVEN a day at 1 Hz with one 50 MB spike in the middle of a flat line
    history = History(maxlen=None)
    for i in range(86_400):
        current = 10_000_000 + (50_000_000 if i == 43_210 else 0)
        history.append(Sample(float(i), 1.7e9 + i, current, current, i, i, 60_000_000, {}))
    document = render(history, {}, "html")
    points = re.search(r'<polyline points="([^"]*)"', document).group(1).split()
    # THEN the line is drawn with a bounded number of points, and the spike is one of them
    assert len(points) <= 1_300
    ys = [float(point.split(",")[1]) for point in points]
    assert min(ys) < 60 and sorted(ys)[1] > 200  # one point near the top, the rest on the flat line


def test_html_of_an_empty_history():
    document = render(History(), {}, "html")
    parse(document)
    assert document.count("no samples") == 2


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@needs_chromium
def test_html_renders_in_a_real_browser_to_a_non_blank_page(tmp_path, history, verdicts):
    image = pytest.importorskip("matplotlib.image", reason="matplotlib reads the screenshot")
    # GIVEN the HTML report on disk
    page = tmp_path / "report.html"
    render(history, verdicts, "html", path=page)
    screenshot = tmp_path / "shot.png"
    # WHEN headless chromium takes a screenshot of it
    _chromium(f"--screenshot={screenshot}", "--window-size=1200,1600", page.as_uri())
    # THEN there is a picture with real content: ink on the page, and the leak highlight's colour
    pixels = (image.imread(str(screenshot))[:, :, :3] * 255).round().astype(int)
    assert pixels.shape[:2] == (1600, 1200)
    not_white = (pixels < 250).any(axis=2).mean()
    assert not_white > 0.03, f"only {not_white:.1%} of the page is not white"
    assert (pixels == LEAK_BACKGROUND_RGB).all(axis=2).sum() > 1_000


@needs_chromium
def test_html_svg_charts_are_in_the_browsers_dom(tmp_path, history, verdicts):
    page = tmp_path / "report.html"
    render(history, verdicts, "html", path=page)
    dom = _chromium("--dump-dom", page.as_uri()).stdout
    # The browser parsed both charts as SVG elements with their lines and axis labels.
    assert dom.count("<svg") == 2
    assert dom.count("<polyline") == 4
    assert ">10 min</text>" in dom and " MiB</text>" in dom


# --- PNG ---------------------------------------------------------------------------------------


def test_png_is_a_non_blank_image_of_the_expected_size(history, verdicts):
    image = pytest.importorskip("matplotlib.image")
    data = render(history, verdicts, "png")
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (1100, 750)
    pixels = image.imread(io.BytesIO(data))[:, :, :3]
    assert (pixels < 0.98).any(axis=2).mean() > 0.02


def test_png_without_matplotlib_names_the_extra_to_install(history, verdicts, monkeypatch):
    # GIVEN matplotlib cannot be imported (None in sys.modules makes every import of it fail)
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    # WHEN a PNG is requested
    with pytest.raises(ImportError, match=r"pip install 'alloccount\[plot\]'"):
        render(history, verdicts, "png")


def test_importing_the_reports_does_not_import_matplotlib():
    # matplotlib takes a noticeable time to import and is optional: only a PNG should pay for it.
    code = "import sys, alloccount.report; print('matplotlib' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.strip() == "False"
