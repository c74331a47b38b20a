"""
`docs/results.md`'s tables, written by the benchmarks that measure them.

A benchmark run with `--publish` puts its table between the page's `<!-- results:NAME -->` and
`<!-- /results:NAME -->` marks, replacing the one there; the text around the marks (what the table shows, what it
means) is written by people and stays.
"""

from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "results.md"


def publish(name: str, markdown: str, page: Path = PAGE) -> Path:
    """Put `markdown` in `page`'s block `name`; a page without that block is a one-line `ValueError`."""
    begin, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    text = page.read_text()
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"{page} has no block {begin} ... {end}: add one where the {name} table goes.")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    page.write_text(f"{head}{begin}\n{markdown.strip()}\n{end}{tail}")
    print(f"Published the {name} table in {page}.", flush=True)
    return page
