#!/usr/bin/env python3
"""Checks the links of a generated mdBook site (scripts/docs).

Every relative `href`/`src` in every HTML page must name a file that exists in the site, and a
`#fragment` must name an `id=` (or `name=`) in the target page. External links (http, https, mailto)
are listed, not fetched: CI has no internet. Exit status 1 on any broken link.

    python3 scripts/check-doc-links.py target/book
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit



class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, int]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name") and (name == "id" or tag == "a"):
                self.ids.add(value)
            if name in ("href", "src") and tag in ("a", "img", "link", "script", "iframe", "source"):
                self.links.append((value, self.getpos()[0]))


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[1]).resolve()
    if not (root / "index.html").is_file():
        print(f"{root}: no index.html (did the build run?)", file=sys.stderr)
        return 2
    cache: dict[Path, _Page] = {}

    def page_of(p: Path) -> _Page:
        if p not in cache:
            cache[p] = parse(p)
        return cache[p]

    broken: list[str] = []
    external: set[str] = set()
    checked = 0
    # Every page, mdBook's own (print.html, toc.html, 404.html) included: their links are generated
    # from ours.
    pages = sorted(root.rglob("*.html"))
    for page_path in pages:
        for link, line in page_of(page_path).links:
            where = f"{page_path.relative_to(root)}:{line}"
            parts = urlsplit(link)
            if parts.scheme in ("http", "https", "mailto"):
                external.add(link)
                continue
            if parts.scheme or link.startswith("//"):
                broken.append(f"{where}: unsupported link {link!r}")
                continue
            checked += 1
            if parts.path.startswith("/"):
                # Root-relative (the 404 page's `<base href="/">` world): the site is served at /.
                target = (root / unquote(parts.path).lstrip("/")).resolve()
                if target.is_dir():
                    target = target / "index.html"
            elif parts.path:
                target = (page_path.parent / unquote(parts.path)).resolve()
                if target.is_dir():
                    target = target / "index.html"
            else:
                target = page_path
            if root not in target.parents and target != root:
                broken.append(f"{where}: {link!r} points outside the site")
                continue
            if not target.exists():
                broken.append(f"{where}: {link!r}: no such file {target.relative_to(root)}")
                continue
            if parts.fragment and target.suffix == ".html":
                if unquote(parts.fragment) not in page_of(target).ids:
                    broken.append(f"{where}: {link!r}: no id {parts.fragment!r} in {target.relative_to(root)}")
    print(f"checked {checked} relative links in {len(pages)} pages")
    if external:
        print(f"{len(external)} external links (not fetched):")
        for link in sorted(external):
            print(f"  {link}")
    if broken:
        print(f"{len(broken)} broken links:", file=sys.stderr)
        for b in broken:
            print(f"  {b}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
