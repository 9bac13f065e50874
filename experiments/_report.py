"""Shared results page: each experiment script owns one marked section of `docs/results.md`."""

import os
import re
from pathlib import Path

from nte._internal._io import atomic_write_text


def update_section(path: str | os.PathLike, key: str, text: str) -> None:
    """Replace the text between `<!-- key:begin -->` and `<!-- key:end -->` in `path`.

    The section is appended when the markers are missing (and the file is created when it does
    not exist). The file is rewritten atomically; every other section is left as it was.
    """
    path = Path(path)
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    old = path.read_text() if path.exists() else "# Results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), flags=re.S)
    if pattern.search(old):
        new = pattern.sub(lambda _: block, old)
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(path, new)
