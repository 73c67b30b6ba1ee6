"""The current-results documents: every figure comes from a committed results file.

`benchmarks/make_docs.py` writes the tables between `<!-- begin generated: ... -->` markers from
the results files; these tests fail when a committed table differs from what it writes, and
when a figure is typed by hand outside those tables (in the README, QUALITY.md and the current
section of SPEED_AND_SCALE.md).
"""

from __future__ import annotations

import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import make_docs  # noqa: E402

# What a measured figure looks like: a fraction with two or more decimals (0.3703, 0.88), a
# number with three or more decimals, a percentage, or a ratio ("0.98 x"). Settings such as
# dropout 0.2, learning rate 1e-3 or Python 3.10 are not figures.
FIGURE = re.compile(r"(?<![\w.])(?<!arXiv )"
                    r"(?:\d+\.\d+\s?x\b|\d+(?:\.\d+)?\s?%|0\.\d{2,}|\d+\.\d{3,})")
# (document, the part that must hold no typed figure: from this heading to the next "## ")
CURRENT_PARTS = [("README.md", None), ("benchmarks/QUALITY.md", None),
                 ("benchmarks/SPEED_AND_SCALE.md", "## Current results")]


def _outside_generated_and_code(text: str) -> str:
    text = re.sub(r"<!-- begin generated: (\S+).*?<!-- end generated: \1 -->", "", text,
                  flags=re.S)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return "\n".join(line for line in text.splitlines() if not line.startswith("    "))


def test_committed_tables_are_what_the_generator_writes(capsys):
    assert make_docs.main(["--check"]) == 0, capsys.readouterr().out[-3000:]


def test_a_figure_edited_by_hand_in_a_generated_table_is_restored_and_detected():
    committed = (ROOT / "README.md").read_text(encoding="utf-8")
    start, stop = make_docs.block_span(committed, "at-a-glance", "README.md")
    table = committed[start:stop]
    figure = FIGURE.search(table)
    assert figure, "the README's generated table holds no figure"
    edited = committed[:start] + table.replace(figure.group(), "9.999", 1) + committed[stop:]
    assert edited != committed
    assert make_docs.generate("README.md", edited) == committed


def test_missing_markers_are_named():
    with pytest.raises(ValueError, match="at-a-glance"):
        make_docs.generate("README.md", "# no tables here\n")


@pytest.mark.parametrize("doc,heading", CURRENT_PARTS, ids=[d for d, _ in CURRENT_PARTS])
def test_no_figure_is_typed_by_hand_in_the_current_results(doc, heading):
    text = (ROOT / doc).read_text(encoding="utf-8")
    if heading is not None:
        text = text[text.index(heading):]
        following = text.find("\n## ", len(heading))
        text = text if following < 0 else text[:following]
    typed = [(line.strip()[:120], FIGURE.findall(line))
             for line in _outside_generated_and_code(text).splitlines() if FIGURE.search(line)]
    assert not typed, f"{doc}: figures typed outside the generated tables: {typed}"


def test_the_figure_pattern_finds_figures_and_spares_settings():
    assert FIGURE.findall("NDCG@10 0.3703, 0.875 x, +29 %, 1.12 x, 0.88") == [
        "0.3703", "0.875 x", "29 %", "1.12 x", "0.88"]
    assert FIGURE.findall("dropout 0.2, lr 1e-3, Python 3.10, TF 2.16.2, batch 256") == []


def test_the_readme_stays_short_and_leads_with_the_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode("utf-8")) <= 15_000, "README.md over 15,000 bytes: move detail to docs/"
    first_screen = "\n".join(readme.splitlines()[:12])
    assert "make demo" in first_screen and "make test" in first_screen
