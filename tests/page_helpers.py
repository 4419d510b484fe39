"""Reading the dashboard's server-rendered pages in tests: elements by id, attributes, the
SVG charts' titles, and the form's CSRF token."""

from __future__ import annotations

from html.parser import HTMLParser

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}


class _Page(HTMLParser):
    """The text inside every element with an id, the `<title>`s of the SVG charts, and the
    attributes of every element, by tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.by_id: dict[str, list[str]] = {}
        self.titles: list[str] = []
        self.elements: list[tuple[str, dict[str, str]]] = []
        self._open: list[tuple[str, str | None]] = []
        self._svg_depth = 0
        self._title: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.elements.append((tag, values))
        if tag in _VOID:
            return
        self._open.append((tag, values.get("id")))
        if values.get("id"):
            self.by_id.setdefault(values["id"], [])
        if tag == "svg":
            self._svg_depth += 1
        if tag == "title" and self._svg_depth:
            self._title = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            open_tag, _ = self._open.pop()
            if open_tag == "svg":
                self._svg_depth -= 1
            if open_tag == "title" and self._title is not None:
                self.titles.append(" ".join("".join(self._title).split()))
                self._title = None
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, element_id in self._open:
            if element_id:
                self.by_id[element_id].append(data)
        if self._title is not None:
            self._title.append(data)

    def text(self, element_id: str) -> str:
        return " ".join(" ".join(self.by_id[element_id]).split())

    def attrs(self, tag: str, **match: str) -> list[dict[str, str]]:
        return [
            a
            for t, a in self.elements
            if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in match.items())
        ]


def read_page(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def csrf_of(html: str) -> str:
    [token] = {a["value"] for a in read_page(html).attrs("input", name="csrf")}
    return token
