"""The maths page and its offline typesetting: the anchors docstrings cite exist, KaTeX is
served from the site (no CDN), and (slow, needs Chromium) every equation is rendered."""

import re
from pathlib import Path

import pytest

from experiments import docs_screenshot

ROOT = Path(__file__).resolve().parent.parent
ANCHORS = [
    "neural-tangent-experts",
    "the-posterior-update",
    "first-order-form",
    "likelihood-methods",
    "invalid-experts",
    "pruning",
    "scaled-sgd",
    "learning-by-pruning-only",
    "continual-learning-metrics",
    "infinite-width-kernels",
]


def _slug(heading: str) -> str:
    """Python-Markdown's default `toc` slug for plain-text headings."""
    text = re.sub(r"[^\w\s-]", "", heading).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def test_math_page_has_every_cited_anchor_once():
    text = (ROOT / "docs" / "math.md").read_text()
    slugs = [_slug(h) for h in re.findall(r"^#{2,3} (.+)$", text, flags=re.M)]
    for anchor in ANCHORS:
        assert slugs.count(anchor) == 1, anchor
    assert "design doc" not in text


def test_katex_is_vendored_and_wired_without_cdn():
    yaml = pytest.importorskip("yaml")  # installed with mkdocs (the docs extra)

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)  # !!python/name tags
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)
    assets = config["extra_javascript"] + config["extra_css"]
    assert any("katex.min.js" in a for a in assets) and any("katex-init.js" in a for a in assets)
    for asset in assets:
        assert not asset.startswith(("http:", "https:", "//")), asset
        assert (ROOT / "docs" / asset).is_file(), asset
    css = (ROOT / "docs" / "assets" / "katex" / "katex.min.css").read_text()
    fonts = re.findall(r"url\((fonts/[^)]+)\)", css)
    assert fonts and all((ROOT / "docs" / "assets" / "katex" / f).is_file() for f in fonts)
    assert {"Mathematics": "math.md"} in config["nav"]


def test_count_rendered_on_a_hand_made_dom():
    dom = (
        '<span class="arithmatex"><span class="katex">x</span></span>'
        '<div class="arithmatex">\\[y\\]</div>'
        '<span class="arithmatex"><span class="katex-error">z</span></span>'
    )
    assert docs_screenshot.count_rendered(dom) == (3, 2, 1)


@pytest.mark.slow
@pytest.mark.skipif(docs_screenshot.find_browser() is None, reason="needs chromium")
def test_every_equation_of_the_math_page_is_typeset(tmp_path):
    assert docs_screenshot.check_page("math", tmp_path / "math.png") == 0
    assert (tmp_path / "math.png").stat().st_size > 10_000
