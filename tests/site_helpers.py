"""Static-site checks shared by the gallery tests: parse pages, resolve every href/src."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class Links(HTMLParser):
    """Collects (tag, href/src) pairs, <img> attributes and <script> sources of one page."""

    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.imgs: list[dict] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name in ("href", "src"):
            if a.get(name):
                self.refs.append((tag, a[name]))
        if tag == "img":
            self.imgs.append(a)
        if tag == "script":
            self.scripts.append(a.get("src", "INLINE"))


def parse_page(page: Path) -> Links:
    parser = Links()
    parser.feed(page.read_text("utf-8"))
    return parser


def check_links(site: Path) -> int:
    """Every href/src of every page resolves to a file inside the site (no scheme, no host);
    returns how many references were checked."""
    checked = 0
    for page in site.rglob("*.html"):
        for tag, ref in parse_page(page).refs:
            parts = urlsplit(ref)
            assert not parts.scheme and not parts.netloc, f"{page}: external reference {ref}"
            target = (page.parent / unquote(parts.path)).resolve()
            assert target.is_file(), f"{page.relative_to(site)}: {tag} -> {ref} does not exist"
            assert site.resolve() in target.parents, f"{page}: {ref} escapes the site"
            checked += 1
    return checked
