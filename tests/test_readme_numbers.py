"""The README reports what the committed results say, and the docs' links lead somewhere.

Cheap checks on text only (no model, no data):

- every number with a decimal point in README.md's Results section (88.12, 0.03, 93.7, ...) is found verbatim in a
  committed text file under ``results/`` (README, CSV, JSON, ...), so a number typed by hand, rounded differently or
  left behind by a deleted experiment fails here;
- every relative link of README.md and docs/*.md points to a file that exists, and to a heading that exists when it
  names one (``usage.md#setup``);
- the README stays short enough to read in a few minutes.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKDOWN = [README, *sorted((ROOT / "docs").glob("*.md"))]
RESULT_SUFFIXES = (".md", ".csv", ".json", ".txt", ".yaml")
README_MAX_LINES = 250

# 88.12, 0.03, 93.7, 2.1x, 86.5%; not version numbers (1.0.3: the lookarounds refuse a dot on either side)
NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?!\.?\d)(?![A-Za-wyz_])")
CODE_SPAN = re.compile(r"`[^`\n]*`")  # command lines and flags (`--blr 2e-3`, `--whiten 768`) are not results
FENCE = re.compile(r"^```.*?^```[^\n]*$", flags=re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def results_section() -> str:
    """README.md's '## Results' section, up to the next second-level heading."""
    match = re.search(r"^## Results[^\n]*\n(.*?)(?=^## |\Z)", README.read_text(encoding="utf-8"), flags=re.M | re.S)
    assert match, "README.md has no '## Results' section"
    return match.group(1)


# a number right after one of these words is a version ("torch 2.6", "Python >= 3.10"), not a result
VERSIONED = re.compile(r"(?:python|torch|torchvision|timm|numpy|transformers|cuda|version|release|v)\s*(?:>=|==)?\s*$",
                       flags=re.I)


def readme_numbers() -> list[str]:
    try:
        section = results_section()
    except (AssertionError, OSError):
        return []  # test_readme_results_section_has_numbers says what is missing
    text = CODE_SPAN.sub(" ", FENCE.sub(" ", section))
    found = (m for m in NUMBER.finditer(text) if not VERSIONED.search(text[max(0, m.start() - 20):m.start()]))
    return sorted({m.group() for m in found})


@cache
def committed_results_text() -> str:
    """The text of every tracked file under results/ with a text suffix, joined (read from the working tree)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "results"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot tell which results are committed")
    texts = []
    for name in listed.stdout.decode().split("\0"):
        path = ROOT / name
        if name.endswith(RESULT_SUFFIXES) and path.is_file():
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(texts)


def test_readme_results_section_has_numbers() -> None:
    results_section()
    assert len(readme_numbers()) >= 10, "the number pattern found (almost) nothing: is the Results section there?"


@pytest.mark.parametrize("number", readme_numbers())
def test_readme_number_is_in_committed_results(number: str) -> None:
    pattern = re.compile(r"(?<![\d.])" + re.escape(number) + r"(?!\d)")
    assert pattern.search(committed_results_text()), (
        f"README.md's Results section says {number}, which no committed text file under results/ contains")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", text, flags=re.M)}


def relative_links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]  # not http:, mailto:, ...


@pytest.mark.parametrize("doc", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in relative_links(doc):
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no such heading in {dest.name})")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links: {broken}"


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; the full usage belongs in docs/"
