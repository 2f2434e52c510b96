"""The docs' code runs: every ```python block of the tutorials, the FAQ and the README, in order, one namespace per
file, in a temporary working directory. Tracebacks point at the Markdown file's own line numbers."""

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [*sorted((ROOT / "docs" / "tutorials").glob("*.md")), ROOT / "docs" / "faq.md", ROOT / "README.md"]
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(first line number, source) of each ```python block of a Markdown file, in order."""
    blocks, lines, start, indent, language = [], path.read_text().splitlines(), None, "", None
    for number, line in enumerate(lines, 1):
        fence = FENCE.match(line)
        if start is None:
            if fence:
                start, indent, language = number, fence.group(1), fence.group(2)
        elif fence and not fence.group(2) and fence.group(1) == indent:
            if language == "python":
                body = [row[len(indent) :] if row.startswith(indent) else row for row in lines[start : number - 1]]
                blocks.append((start + 1, "\n".join(body) + "\n"))
            start = None
    assert start is None, f"{path.name}: the code block opened on line {start} is never closed"
    return blocks


def test_blocks_are_found():
    blocks = python_blocks(ROOT / "docs" / "tutorials" / "minimal_env.md")
    assert len(blocks) > 5 and all(source.strip() for _, source in blocks)


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_python_blocks_run(path, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = python_blocks(path)
    if not blocks:
        pytest.skip(f"{path.name} has no python blocks")
    monkeypatch.chdir(tmp_path)
    # a real module, so that dataclasses, pickling and multiprocessing can find what the blocks define
    name = "docs_" + re.sub(r"\W", "_", path.stem)
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    try:
        for line, source in blocks:
            # padded so that the block's lines keep their numbers in the Markdown file
            exec(compile("\n" * (line - 1) + source, str(path), "exec"), module.__dict__)
    finally:
        plt.close("all")
