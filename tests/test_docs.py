"""The docs run: every ```python block of README.md and docs/ is executed, unless marked as a sketch; every page is
in the mkdocs nav. The convention is in docs/dev/docs.md.

Each page's blocks run in order in one namespace (a later block may use an earlier block's names), in a fresh
temporary working directory, so files a block writes (``runs/...``, ``tickets/...``) land there.
"""

from __future__ import annotations

import doctest
import re
import sys
import textwrap
import types
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SKETCH = "<!-- sketch -->"
#: Pages whose blocks train for longer than a few seconds on a 2-core CPU (run with --runslow / LT_RUN_SLOW=1).
SLOW: set[str] = set()  # all pages together take about 25 s today

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")


def _fences(lines: list[str]):
    """``(opening line index, closing line index, info string)`` of each fenced block."""
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i].rstrip("\n"))
        if not m:
            i += 1
            continue
        closing = re.compile(rf"^[ \t]*{re.escape(m['fence'][0])}{{{len(m['fence'])},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not closing.match(lines[j].rstrip("\n")):
            j += 1
        yield i, j, m["info"].strip()
        i = j + 1


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """``(line of the opening fence, dedented code, is a sketch)`` of each ```python block of a Markdown text.

    A block is a sketch when the last non-blank line before its opening fence is ``<!-- sketch -->``.

    Example:
        >>> python_blocks("<!-- sketch -->\\n```python\\nx = 1\\n```\\n\\n```python\\ny = 2\\n```\\n")
        [(2, 'x = 1\\n', True), (6, 'y = 2\\n', False)]
    """
    lines = text.splitlines(keepends=True)
    out = []
    for i, j, info in _fences(lines):
        if info.split(" ")[0] in ("python", "py"):
            before = [ln.strip() for ln in lines[:i] if ln.strip()]
            code = textwrap.dedent("".join(lines[i + 1 : j]))
            out.append((i + 1, code, bool(before) and before[-1] == SKETCH))
    return out


def _run_doctest(code: str, namespace: dict, name: str, line: int) -> None:
    test = doctest.DocTestParser().get_doctest(code, namespace, name, name, line)
    out: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=out.append, clear_globs=False)
    assert runner.failures == 0, "".join(out)


def _page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _params():
    for page in PAGES:
        if not any(not sketch for _, _, sketch in python_blocks(page.read_text())):
            continue
        marks = [pytest.mark.slow] if _page_id(page) in SLOW else []
        yield pytest.param(page, id=_page_id(page), marks=marks)


@pytest.mark.parametrize("page", list(_params()))
def test_python_blocks_of_the_page_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # docs never need the network
    module = types.ModuleType("__docs__")  # a real module: @dataclass and pickling look their class up there
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    for line, code, sketch in python_blocks(page.read_text()):
        if sketch:
            continue
        try:
            if code.lstrip().startswith(">>>"):  # a console session: run as a doctest, its output is checked
                _run_doctest(code, namespace, f"{_page_id(page)}:{line}", line)
                continue
            exec(compile(code, f"{page}:{line}", "exec"), namespace)
        except Exception as err:
            raise AssertionError(
                f"{_page_id(page)}, the ```python block at line {line} fails: {type(err).__name__}: {err}. Fix it, or "
                f"mark it '{SKETCH}' (docs/dev/docs.md)"
            ) from err


def test_sketches_are_few_and_marked_only_on_python_blocks():
    """A sketch marker must sit right before a ```python block (else it marks nothing and is a typo)."""
    for page in PAGES:
        text = page.read_text()
        lines = text.splitlines(keepends=True)
        for i, j, _ in _fences(lines):  # a marker shown inside an example block is no marker
            lines[i : j + 1] = [""] * (j + 1 - i)
        marked = sum(sketch for _, _, sketch in python_blocks(text))
        markers = sum(ln.strip() == SKETCH for ln in lines)
        assert markers == marked, f"{_page_id(page)}: a '{SKETCH}' is not before a ```python block"


def _nav_files(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [f for item in node for f in _nav_files(item)]
    if isinstance(node, dict):
        return [f for value in node.values() for f in _nav_files(value)]
    return []


def test_every_docs_page_is_in_the_mkdocs_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = _nav_files(config["nav"])
    docs = ROOT / config.get("docs_dir", "docs")
    pages = sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.md"))
    assert sorted(set(pages) - set(nav)) == [], "pages missing from the nav of mkdocs.yml"
    assert [f for f in nav if not (docs / f).is_file()] == [], "nav entries without a page"
    assert len(nav) == len(set(nav)), "a page is listed twice in the nav"
