"""The documentation holds together: relative links resolve, the README stays short."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [REPO / "README.md", REPO / "bench" / "README.md", *DOCS]
README_WORDS = 1600

# `[text](target)` and `![alt](target)`, the target up to a space, `#` or `)`.
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s#>]*)[^)]*\)")


def prose(text: str) -> str:
    """`text` without fenced code blocks and inline code, where brackets are code."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"`[^`\n]*`", "", text)


def relative_targets(text: str) -> list[str]:
    """The file targets of a markdown text's links that point inside the repository."""
    # An empty target is a link to an anchor of the same page.
    targets = [t for t in LINK.findall(prose(text)) if t]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def broken_links(page: Path) -> list[str]:
    """The relative link targets of `page` that name no file or folder."""
    targets = relative_targets(page.read_text(encoding="utf-8"))
    return [t for t in targets if not (page.parent / t).exists()]


def test_links_are_found_in_prose_only():
    text = (
        "See [the guide](docs/a.md#part), ![a figure](../fig.png), [a site](https://x.org),"
        " [here](#top) and <[b](b.md)>.\n```python\nx[0](y)\n```\n`f[1](z)`"
    )
    assert relative_targets(text) == ["docs/a.md", "../fig.png", "b.md"]


def test_every_relative_link_resolves():
    assert len(PAGES) > 3  # README.md, bench/README.md and the docs folder
    broken = {p.relative_to(REPO).as_posix(): broken_links(p) for p in PAGES}
    assert {page: links for page, links in broken.items() if links} == {}


def test_the_readme_links_every_docs_page():
    linked = set(relative_targets((REPO / "README.md").read_text(encoding="utf-8")))
    pages = {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
    assert pages - linked == set()


def test_the_readme_is_short():
    words = len((REPO / "README.md").read_text(encoding="utf-8").split())
    assert words <= README_WORDS, f"README.md has {words} words, over {README_WORDS}"
