"""`docs/results.md`'s tables are written by the benchmarks (`--publish`), between marks the page keeps."""

import re
from pathlib import Path

import pytest

from benchmarks.results_page import PAGE, publish

ROOT = Path(__file__).resolve().parents[2]


def test_publish_replaces_only_its_block(tmp_path):
    page = tmp_path / "results.md"
    page.write_text("# Results\n\nWhat it shows.\n<!-- results:a -->\n| old |\n<!-- /results:a -->\nWhat it means.\n")
    publish("a", "| new |\n| --- |\n", page)
    assert page.read_text() == (
        "# Results\n\nWhat it shows.\n<!-- results:a -->\n| new |\n| --- |\n<!-- /results:a -->\nWhat it means.\n"
    )
    with pytest.raises(ValueError, match="has no block <!-- results:b -->"):
        publish("b", "| x |", page)


def test_every_published_table_has_its_block_in_the_results_page():
    names = {
        name
        for path in (ROOT / "benchmarks").glob("*.py")
        for pattern in (r'publish\("(\w+)"', r'publish_as[^"\n]*"(\w+)"')  # a call, or where_style_is_lost.main's
        for name in re.findall(pattern, path.read_text())
    }
    assert len(names) >= 4
    text = PAGE.read_text()
    for name in names:
        assert text.count(f"<!-- results:{name} -->") == 1 and text.count(f"<!-- /results:{name} -->") == 1, name
