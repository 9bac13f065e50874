"""Check that the documentation's mathematics is typeset offline, with a headless-Chromium
screenshot of one equation page.

    python -m experiments.docs_screenshot               # build, check docs/math.md, screenshot
    python -m experiments.docs_screenshot --page tutorials/posterior --out /tmp/posterior.png
    python -m experiments.docs_screenshot --no-build    # reuse an existing site/

It builds the site (`mkdocs build --strict`), opens `site/<page>/index.html` from disk
(`file://`, so nothing can come from a network: KaTeX is vendored in `docs/assets/katex`) in
headless Chromium, and counts the `.arithmatex` elements that `pymdownx.arithmatex` wrote and
how many of them KaTeX rendered. It fails (exit 1) if any is left unrendered, any KaTeX error
is shown or the page has no equation at all, and saves a screenshot (default `site/math.png`)
to look at. Needs a `chromium` (Debian: `apt-get install chromium`) or `google-chrome`
executable; exit 2 without one.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ._help import HelpFormatter

ROOT = Path(__file__).resolve().parent.parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_ELEMENT = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.S)


def find_browser() -> str | None:
    """The first headless-capable Chromium on `PATH`, or `None`."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _chromium(browser: str, url: str, *flags: str) -> str:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    cmd += ["--virtual-time-budget=10000", *flags, url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True)
    return done.stdout


def count_rendered(dom: str) -> tuple[int, int, int]:
    """`(elements, rendered, errors)`: the `.arithmatex` elements of a rendered DOM, how many
    contain KaTeX output, and how many KaTeX error spans the page shows."""
    elements = _ELEMENT.findall(dom)
    rendered = sum('class="katex' in body for _, body in elements)
    return len(elements), rendered, dom.count("katex-error")


def check_page(page: str, out: Path, *, build: bool = True, size: str = "1200,1600") -> int:
    """Build (optionally), check and screenshot `page`; returns the exit status."""
    browser = find_browser()
    if browser is None:
        print("no chromium found: install one (apt-get install chromium)", file=sys.stderr)
        return 2
    if build:
        env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
        subprocess.run(["mkdocs", "build", "--strict", "-q"], cwd=ROOT, check=True, env=env)
    html = ROOT / "site" / page / "index.html"
    if not html.is_file():
        print(f"`--page`: no built page {html}", file=sys.stderr)
        return 1
    url = html.as_uri()
    elements, rendered, errors = count_rendered(_chromium(browser, url, "--dump-dom"))
    out.parent.mkdir(parents=True, exist_ok=True)
    _chromium(browser, url, f"--screenshot={out}", f"--window-size={size}")
    print(f"{page}: {rendered}/{elements} equations typeset, {errors} KaTeX errors; {out}")
    return 0 if elements and rendered == elements and not errors else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.docs_screenshot",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--page", default="math", help="built page to check")
    parser.add_argument("--out", type=Path, default=ROOT / "site" / "math.png", help="screenshot")
    parser.add_argument("--no-build", action="store_true", help="reuse the existing site/")
    parser.add_argument("--size", default="1200,1600", help="window size WIDTH,HEIGHT")
    args = parser.parse_args(argv)
    return check_page(args.page, args.out, build=not args.no_build, size=args.size)


if __name__ == "__main__":
    sys.exit(main())
