"""The runnable code of the documentation runs.

Every fenced ```python block of docs/**/*.md and README.md is executed, the blocks of one page
in order in one fresh namespace (a page's blocks build on each other). A block that is not meant
to run on its own (an excerpt of private internals, pseudo-code, a long experiment) says so in
its rendered title, which is the marker this test reads:

    ```python title="Excerpt from nte/pruning/_prune_only.py (not runnable on its own)"
    ```python title="Pseudo-code of _combine (not runnable)"

(pymdownx.highlight renders the title above the block). A failure names the page and the line
of the block; the traceback's line numbers are the page's own.
"""

import dataclasses
import re
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Pages whose blocks are not converted yet (owned by other branches). Enabling a page is deleting
# its line here.
SKIP: dict[str, str] = {}
# Pages whose code takes more than ~8 s on 2 CPU cores: run with `-m slow`.
SLOW = {
    "docs/tutorials/continual.md",
    "docs/tutorials/ewc.md",
    "docs/tutorials/hypernetworks.md",
    "docs/tutorials/infinite_width.md",
    "docs/tutorials/own_network.md",
    "docs/tutorials/pruning.md",
    "docs/tutorials/posterior.md",
    "docs/tutorials/tangent_experts.md",
    "docs/tutorials/wide_networks.md",
}
# Pages that load data the test machine may lack: skipped (with the reason) when it is absent.
_FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
NEEDS = {"docs/api/data.md": _FASHION, "docs/tutorials/infinite_width.md": _FASHION}

_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)(?P<attrs>.*)$")
_NOT_RUNNABLE = re.compile(r"""title=["'](excerpt|pseudo-code)""", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the first code line in the page
    source: str
    runnable: bool


def extract(text: str) -> list[Block]:
    """The ```python blocks of a markdown text, in order (nested fences of other languages and
    indented blocks inside admonitions included)."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m["indent"], m["fence"]
        end = i + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        if m["lang"] == "python":
            body = [ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[i + 1 : end]]
            runnable = not _NOT_RUNNABLE.search(m["attrs"])
            blocks.append(Block(i + 2, "\n".join(body) + "\n", runnable))
        i = end + 1
    return blocks


def _pages() -> list[str]:
    pages = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))
    return pages + ["README.md"]


def _params():
    out = []
    for page in _pages():
        if not any(b.runnable for b in extract((ROOT / page).read_text())):
            continue
        marks = [pytest.mark.slow] if page in SLOW else []
        if page in SKIP:
            marks.append(pytest.mark.skip(reason=SKIP[page]))
        if page in NEEDS and not NEEDS[page].exists():
            marks.append(pytest.mark.skip(reason=f"{NEEDS[page]} absent"))
        out.append(pytest.param(page, marks=marks, id=page))
    return out


@pytest.mark.parametrize("page", _params())
def test_page_code_runs(page):
    namespace = {"__name__": "__docs__"}
    for block in extract((ROOT / page).read_text()):
        if not block.runnable:
            continue
        start = time.perf_counter()
        try:
            # Pad with blank lines so tracebacks report the page's own line numbers.
            code = compile("\n" * (block.line - 1) + block.source, str(ROOT / page), "exec")
            exec(code, namespace)
        except Exception as e:  # noqa: BLE001 - report any failure with its location
            pytest.fail(f"{page}: block at line {block.line} raised {type(e).__name__}: {e}")
        assert time.perf_counter() - start < 600, f"{page}:{block.line} is too slow for the docs"


def test_extract_finds_blocks_lines_and_markers():
    text = "\n".join(
        [
            "# Title",  # 1
            "```python",  # 2
            "a = 1",  # 3
            "```",  # 4
            "```text",  # 5
            "```python",  # 6: inside a text block, not a python block
            "```",  # 7
            '```python title="Excerpt from nte/_x.py (not runnable on its own)"',  # 8
            "private()",  # 9
            "```",  # 10
            "!!! note",  # 11
            "    ```python",  # 12
            "    b = a + 1",  # 13
            "    ```",  # 14
            "```python title='Pseudo-code of f'",  # 15
            "x ← y",  # 16
            "```",  # 17
        ]
    )
    blocks = extract(text)
    assert [(b.line, b.source, b.runnable) for b in blocks] == [
        (3, "a = 1\n", True),
        (9, "private()\n", False),
        (13, "b = a + 1\n", True),
        (16, "x ← y\n", False),
    ]


def test_skip_and_slow_tables_name_pages_with_runnable_code():
    runnable = {p for p in _pages() if any(b.runnable for b in extract((ROOT / p).read_text()))}
    for page in {*SKIP, *SLOW, *NEEDS}:
        assert (ROOT / page).is_file(), page
        assert page in runnable, f"{page} has no runnable block: remove it from SKIP/SLOW"


def test_excerpts_are_visibly_captioned():
    """The marker is the rendered title, so every excerpt also says so on the page."""
    for page in _pages():
        for line in (ROOT / page).read_text().splitlines():
            if "```python" in line and "excerpt" in line.lower():
                assert _NOT_RUNNABLE.search(line), f"{page}: malformed excerpt marker {line!r}"
