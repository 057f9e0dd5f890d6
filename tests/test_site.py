"""The rendered book as a reader gets it: headless Chromium over the smoke-profile site.

Builds the site from the smoke-executed chapters (executing any the chapter tests did not),
serves it on 127.0.0.1, and opens every page with all non-local requests blocked. Screenshots
of every page are kept in ``_build/test-artifacts/screenshots``.
"""

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

from vqtto import book

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = book.BUILD / "test-artifacts" / "screenshots"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)"),
]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(smoke_stage, tmp_path_factory):
    """The built smoke site, served. ``VQTTO_TEST_STAGE`` names a folder of smoke-executed chapters to reuse
    (e.g. ``_build/src`` after ``python -m vqtto.book run --profile smoke``); chapters missing there are executed."""
    smoke_stage = Path(os.environ.get("VQTTO_TEST_STAGE") or smoke_stage)
    for chapter in book.chapter_names():
        if not (smoke_stage / f"{chapter}.ipynb").exists():
            book.execute(chapter, "smoke", out_dir=smoke_stage)
    html = book.build_site(stage=smoke_stage, html=tmp_path_factory.mktemp("site") / "html")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(html)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield html, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
            "--no-first-run", "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


def _open(browser, url):
    """Open ``url`` with every non-local request blocked; return (page, blocked urls, js errors)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    blocked, errors = [], []

    def route(r):
        if r.request.url.startswith("http://127.0.0.1"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="networkidle")
    page.wait_for_timeout(500)
    return page, blocked, errors


def _pages(html: Path):
    return sorted(p.name for p in html.glob("*.html") if p.name not in ("genindex.html", "search.html"))


def test_every_chapter_has_a_page(site):
    html, _ = site
    for chapter in book.chapter_names():
        assert (html / f"{chapter}.html").exists(), chapter


def test_every_page_renders_offline_without_errors(site, browser):
    html, base = site
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name in _pages(html):
        page, blocked, errors = _open(browser, f"{base}/{name}")
        text = page.inner_text("body")
        assert blocked == [], f"{name} requested non-local URLs {blocked}"
        assert "Traceback (most recent call last)" not in text and "PapermillExecutionError" not in text, name
        assert page.locator(".output.error, .cell_output .traceback").count() == 0, name
        broken = page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
        assert broken == [], f"{name}: images that did not load: {broken}"
        page.screenshot(path=str(SHOTS / f"{Path(name).stem}.png"), full_page=True)
        assert not errors, f"{name}: JavaScript errors {errors}"
        page.close()


def test_math_is_typeset(site, browser):
    _, base = site
    page, _, _ = _open(browser, f"{base}/01_training.html")
    page.wait_for_selector("mjx-container", timeout=15000)
    assert page.locator("mjx-container").count() >= 5
    assert "\\\\mathcal" not in page.inner_text("article")
    page.close()


def test_vendored_widget_manager_matches_installed_ipywidgets(site):
    import json

    import ipywidgets

    html, _ = site
    versions = json.loads((html / "_static" / "offline" / "versions.json").read_text())
    wanted = ipywidgets._version.__html_manager_version__  # e.g. "^1.0.1"
    major = wanted.lstrip("^~=")
    assert versions["@jupyter-widgets/html-manager"].split(".")[0] == major.split(".")[0]


VISIBLE_WIDGET_IMAGES = """() => [...document.querySelectorAll('.widget-html img, .jupyter-widgets img')]
    .filter(i => i.offsetParent !== null && i.getBoundingClientRect().width > 0).map(i => i.src)"""


def _explorer(browser, base, page_name, slider_label, dropdown_label):
    """Open a chapter page at its static explorer; return (page, js errors, slider, dropdown, images shown)."""
    page, _, errors = _open(browser, f"{base}/{page_name}")
    slider = page.locator(".widget-slider", has=page.locator(".widget-label", has_text=slider_label)).first
    slider.wait_for(timeout=15000)
    dropdown = page.locator(".widget-dropdown", has=page.locator(".widget-label", has_text=dropdown_label)).first
    assert dropdown.count() == 1, f"the {dropdown_label} selector is rendered"
    return page, errors, slider, dropdown, page.evaluate(VISIBLE_WIDGET_IMAGES)


def _step(page, slider):
    """Move ``slider`` one option right; return the images then shown."""
    slider.locator(".noUi-handle").first.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_timeout(500)
    return page.evaluate(VISIBLE_WIDGET_IMAGES)


def test_alpha_slider_changes_the_traversal_in_the_static_page(site, browser):
    _, base = site
    page, errors, slider, _, before = _explorer(browser, base, "02_gradient_search.html", "alpha", "masking")
    assert len(before) >= 1, "a traversal image is shown"
    after = _step(page, slider)
    assert after and after != before, "moving the alpha slider shows another traversal"
    page.screenshot(path=str(SHOTS / "02_gradient_search-slider-moved.png"), full_page=False)
    assert not errors
    page.close()


def test_task_and_lambda_selectors_change_the_answers_in_the_static_page(site, browser):
    _, base = site
    page, errors, slider, task, first = _explorer(browser, base, "08_constrained_tasks.html", "lambda", "task")
    assert len(first) == 1, "one panel of answers is shown"
    moved = _step(page, slider)
    assert moved and moved != first, "moving the lambda slider shows the answers at another weight"
    task.locator("select").select_option(index=1)
    page.wait_for_timeout(500)
    other = page.evaluate(VISIBLE_WIDGET_IMAGES)
    assert other and other != moved, "choosing another task shows its answers"
    page.screenshot(path=str(SHOTS / "08_constrained_tasks-explorer.png"), full_page=False)
    assert not errors
    page.close()


def test_results_page_links_reach_the_chapter_pages(site):
    """The results table links every claim to its chapter's page (a document link, not an in-page anchor)."""
    import re

    html, _ = site
    hrefs = set(re.findall(r'href="([^"#]+\.html)(?:#[^"]*)?"', (html / "09_results.html").read_text()))
    chapter_links = {h for h in hrefs if any(h.endswith(f"{c}.html") for c in book.chapter_names())}
    assert {f"{c}.html" for c in ("01_training", "02_gradient_search", "07_hardness")} <= chapter_links
    assert all((html / h).exists() for h in chapter_links)


# Tables, figures and printed output wider than the article's text column that are not inside a box that
# scrolls sideways (their own or an ancestor's) are clipped or run under the sidebar: listed here.
CLIPPED = """(extra) => {
  const article = document.querySelector('article.bd-article') || document.querySelector('main');
  const main = document.querySelector('main.bd-main') || article;
  const out = [];
  const sel = 'article table, article img, article pre, article .cell_output > *, article .output, article svg, article iframe';
  for (const el of article.querySelectorAll(sel)) {
    if (el.offsetParent === null || el.getBoundingClientRect().width === 0) continue;
    // a cell tagged full-width may use the page's margin too (jupyter-book's wide layout)
    const wide = el.closest('.tag_full-width') !== null;
    const limit = Math.min((wide ? main : article).getBoundingClientRect().right, window.innerWidth) + 1;
    if (el.getBoundingClientRect().right <= limit) continue;
    let a = el.parentElement, scrolls = false;
    while (a && a !== document.body) {
      const ox = getComputedStyle(a).overflowX;
      if (ox === 'auto' || ox === 'scroll') { scrolls = a.getBoundingClientRect().right <= limit; break; }
      a = a.parentElement;
    }
    if (!scrolls) out.push(el.tagName.toLowerCase() + '.' + [...el.classList].join('.') + ' right edge '
                           + Math.round(el.getBoundingClientRect().right) + ' > ' + Math.round(limit));
  }
  return out;
}"""


def test_the_clip_check_catches_a_wide_table_outside_a_scroll_box(site, browser):
    """The check of the next test is not vacuous: a table wider than the column, in no scroll box, is caught."""
    _, base = site
    page, _, _ = _open(browser, f"{base}/01_training.html")
    assert page.evaluate(CLIPPED) == []
    page.evaluate("""() => { const d = document.createElement('div'); d.style.overflow = 'visible';
        d.innerHTML = '<table style="width:3000px;display:table"><tr><td>wide</td></tr></table>';
        document.querySelector('article.bd-article').appendChild(d); }""")
    assert any(c.startswith("table") for c in page.evaluate(CLIPPED))
    page.close()


def test_no_table_or_figure_is_clipped(site, browser):
    html, base = site
    clipped = {}
    for name in _pages(html):
        page, _, _ = _open(browser, f"{base}/{name}")
        found = page.evaluate(CLIPPED)
        if found:
            clipped[name] = found[:5]
            page.screenshot(path=str(SHOTS / f"{Path(name).stem}-clipped.png"), full_page=True)
        page.close()
    assert not clipped, f"content wider than the column and not in a scroll box: {clipped}"


def test_shown_code_wraps_instead_of_scrolling_sideways(site, browser):
    """A code cell whose source is shown has no line cut off at the column's right edge."""
    html, base = site
    cut = {}
    for name in _pages(html):
        page, _, _ = _open(browser, f"{base}/{name}")
        found = page.evaluate("""() => [...document.querySelectorAll('article .cell_input pre')]
            .filter(p => p.offsetParent !== null && p.scrollWidth > p.clientWidth + 1).length""")
        if found:
            cut[name] = found
        page.close()
    assert not cut, f"code cells that scroll sideways, per page: {cut}"


def test_no_chapter_shows_papermills_injected_parameters_cell(site, browser):
    _, base = site
    for chapter in book.chapter_names():
        page, _, _ = _open(browser, f"{base}/{chapter}.html")
        shown = page.locator(".tag_injected-parameters").count()
        assert shown == 0 and "# Parameters" not in page.inner_text("article"), f"{chapter} shows the injected cell"
        page.close()


def test_the_results_summary_is_fully_visible_in_the_first_screen(site, browser):
    """At 1280 x 900 the whole summary table is on the first screen, with nothing to scroll sideways."""
    _, base = site
    page, _, _ = _open(browser, f"{base}/09_results.html")
    table = page.locator("table.vqtto-summary")
    assert table.count() == 1, "the results page opens with one summary table"
    box = table.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 1280, f"the summary table spans x {box}"
    assert box["y"] >= 0 and box["y"] + box["height"] <= 900, f"the summary table ends at y={box['y'] + box['height']:.0f}"
    wider = page.evaluate("""() => { const out = []; let a = document.querySelector('table.vqtto-summary');
        while (a && a !== document.body) {
          const ox = getComputedStyle(a).overflowX;
          if ((ox === 'auto' || ox === 'scroll') && a.scrollWidth > a.clientWidth + 1) out.push(a.tagName + '.' + a.className);
          a = a.parentElement; }
        if (document.documentElement.scrollWidth > window.innerWidth) out.push('the page');
        return out; }""")
    assert wider == [], f"the summary table needs sideways scrolling in {wider}"
    assert page.locator("table.vqtto-summary .vqtto-badge").count() == page.locator("table.vqtto-summary tbody tr").count()
    page.screenshot(path=str(SHOTS / "09_results-first-screen.png"), full_page=False)
    page.close()
