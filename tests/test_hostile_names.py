"""State and LLM names are untrusted text (LLM output): every output renders them as text.

A small simulated panel of two LLMs has its states renamed to hostile names (script and img
tags, a `</title>` break-out, quotes, a newline, Markdown table and inline syntax, mathtext,
a 10 kB name, non-ASCII and right-to-left text) and one LLM is named
``<script>alert('llm')</script>``. It goes through the real commands — `fit --method map`,
`report` and `compare` — and every output is checked: the HTML and the Markdown (rendered
with a CommonMark renderer, which passes raw HTML through) contain no element or attribute
that came from a name, tables keep their shape, the names read back as text, the JSON files
hold the exact names, and the figures draw (mathtext in a name is shown literally).

The memory part: a 100 kB name must not be copied into fixed-width numpy unicode arrays (each
element of `<U100000` takes 400 kB, so arrays of pairs or count rows grew to hundreds of MB).
"""

from __future__ import annotations

import json
import tracemalloc
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from markdown_it import MarkdownIt

from detailed_balance.cli import main
from detailed_balance.data import Transitions
from detailed_balance.reports.text import LABEL_CHARS, label, markdown_text
from detailed_balance.simulation import simulate_panel

LONG = "long-" + "x" * 10_000 + "<script>alert('tail')</script>"
HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "</title><script>x</script>",
    "\"double\" and 'single' quotes",
    "line one\nline two",
    "pipe | and `backticks` | *stars* _under_",
    "[click](javascript:alert(1))",
    "$x^2$",
    "$\\undefinedmacro{$",
    "&amp; &lt;b&gt; entity",
    "# heading?",
    LONG,
    "Ä中文🙂",
    "שלום עולם \u202eexe.txt",
]
HOSTILE_LLM = "<script>alert('llm')</script>"
PLAIN_LLM = "plain"


def hostile_panel() -> Transitions:
    """Two LLMs on 16 states; the first 14 states carry the hostile names."""
    panel = simulate_panel({HOSTILE_LLM: 1.0, PLAIN_LLM: 1.6}, n_states=16, visits=150, seed=5)
    data = panel.data
    rename = dict(zip(data.states.astype(str), HOSTILE, strict=False))
    counts = data.counts.assign(
        source=data.counts["source"].map(lambda s: rename.get(s, s)),
        target=data.counts["target"].map(lambda s: rename.get(s, s)),
    )
    visits = data.visits.assign(source=data.visits["source"].map(lambda s: rename.get(s, s)))
    return Transitions.from_counts(counts, visits)


# -- rendering checks ----------------------------------------------------------------------------
ALLOWED_TAGS = {
    "html",
    "head",
    "meta",
    "title",
    "style",
    "body",
    "main",
    "h1",
    "h2",
    "p",
    "span",
    "table",
    "caption",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "figure",
    "img",
    "figcaption",
    "em",
    "strong",
    "blockquote",
    "code",
}


class _Elements(HTMLParser):
    """Every start tag with its attributes, the text, and table rows' cell counts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.rows: list[int] = []
        self._cells = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self._cells = 0
        if tag in ("td", "th"):
            self._cells += 1

    def handle_endtag(self, tag):
        if tag == "tr":
            self.rows.append(self._cells)

    def handle_data(self, data):
        self.text.append(data)


def elements(html: str) -> _Elements:
    parser = _Elements()
    parser.feed(html)
    parser.close()
    return parser


def assert_inert(html: str, images: str) -> str:
    """No tag or attribute a name could have brought; images only `images` sources. Returns the
    page's text (entities decoded, whitespace collapsed)."""
    found = elements(html)
    for tag, attrs in found.tags:
        assert tag in ALLOWED_TAGS, f"unexpected <{tag}> (from a name?)"
        assert not any(k.startswith("on") for k in attrs), f"event handler on <{tag}>: {attrs}"
        if tag == "img":
            assert attrs["src"].startswith(images), attrs["src"][:80]
        if tag == "a":  # pragma: no cover - links are not allowed at all
            raise AssertionError(f"a link came from a name: {attrs}")
    return " ".join(" ".join(found.text).split())


def assert_tables_keep_shape(html: str) -> None:
    """Every table's rows have as many cells as its header (a `|` or a newline in a name would
    add or split cells in Markdown)."""
    tables = html.split("<table>")[1:]
    assert tables
    for table in tables:
        shape = elements("<table>" + table.split("</table>")[0] + "</table>").rows
        assert len(set(shape)) == 1, shape


def render_markdown(text: str) -> str:
    """CommonMark with raw HTML passed through (the default) and GFM tables."""
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(text)


def shown(name: str) -> str:
    """How a name reads in a rendered document: its label, whitespace collapsed."""
    return " ".join(label(name).split())


# -- the pipeline through the real commands ---------------------------------------------------------
@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    data = hostile_panel()
    data.counts.to_csv(root / "panel.csv", index=False)
    data.visits.to_csv(root / "panel.visits.csv", index=False)
    fit = root / "fit.nc"
    args = ["fit", str(root / "panel.csv"), "--visits", str(root / "panel.visits.csv")]
    args += ["--llm", HOSTILE_LLM, "--method", "map", "--out", str(fit), "--no-progress"]
    assert main(args) == 0
    report = root / "report" / "report.html"
    assert main(["report", str(fit), "--other-method", "map", "-o", str(report)]) == 0
    compare = root / "cmp" / "compare.html"
    args = ["compare", str(root / "panel.csv"), "--visits", str(root / "panel.visits.csv")]
    args += ["--method", "map", "--verdicts", "map", "-o", str(compare)]
    assert main(args) == 0
    return {"data": root / "panel.csv", "fit": fit, "report": report, "compare": compare}


def test_the_panel_really_carries_the_hostile_names(outputs):
    from detailed_balance.data import read_transitions

    data = read_transitions(outputs["data"], outputs["data"].with_suffix(".visits.csv"))
    assert set(HOSTILE) <= set(data.states.astype(str))
    assert HOSTILE_LLM in data.llms


@pytest.mark.parametrize("kind", ["report", "compare"])
def test_html_renders_names_as_text(outputs, kind):
    page = outputs[kind].read_text(encoding="utf-8")
    text = assert_inert(page, "data:image/png;base64,")
    assert page.count("<script") == 0 and page.count("<img ") == page.count("<img alt=")
    assert "onerror=alert(1)>" not in page  # only escaped (&gt;) forms
    if kind == "report":
        for name in ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "Ä中文🙂"):
            assert shown(name) in text
    assert HOSTILE_LLM in text
    assert_tables_keep_shape(page)


@pytest.mark.parametrize("kind", ["report", "compare"])
def test_markdown_renders_names_as_text(outputs, kind):
    md_path = outputs[kind].with_suffix(".md")
    source = md_path.read_text(encoding="utf-8")
    assert "<script" not in source and "<img" not in source and "</title" not in source
    rendered = render_markdown(source)
    text = assert_inert(rendered, f"{outputs[kind].stem}_figures/")
    assert HOSTILE_LLM in text
    if kind == "report":
        for name in HOSTILE:  # 16 states: the table of the 10 lowest and 10 highest has all
            assert shown(name) in text, name
    # a `|` or a newline in a name does not add or split table cells
    assert_tables_keep_shape(rendered)
    assert "<a " not in rendered
    for figure in (md_path.parent / f"{outputs[kind].stem}_figures").iterdir():
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_json_round_trips_the_exact_names(outputs):
    summary = json.loads(outputs["report"].with_suffix(".json").read_text())
    states = {row["state"] for row in summary["states"]}
    assert set(HOSTILE) <= states  # whole, unescaped, untruncated: the 10 kB name included
    assert LONG in states
    assert HOSTILE_LLM in summary["provenance"]["data_llms"]


def test_compare_json_round_trips_the_exact_llm_name(outputs):
    summary = json.loads(outputs["compare"].with_suffix(".json").read_text())
    assert set(summary["llms"]) == {HOSTILE_LLM, PLAIN_LLM}
    assert summary["llms"][HOSTILE_LLM]["verdict"] != "not tested"


def test_long_names_are_cut_in_the_documents(outputs):
    for path in (outputs["report"], outputs["report"].with_suffix(".md")):
        page = path.read_text(encoding="utf-8")
        assert "x" * (LABEL_CHARS + 1) not in page
        assert "alert('tail')" not in page


# -- the escaping function itself ---------------------------------------------------------------
@pytest.mark.parametrize("name", [*HOSTILE, HOSTILE_LLM, "a\\b", "a\r\nb\u2028c", "1. item"])
def test_markdown_text_reads_back_as_the_literal_text(name):
    """Rendered on its own, in a table cell and after a heading marker, the escaped text reads
    back as exactly the text (line breaks become spaces) and brings no element."""
    expected = " ".join(name.split())
    escaped = markdown_text(name)
    assert "\n" not in escaped and "\r" not in escaped and "\u2028" not in escaped
    for source, tags, prefix in (
        (escaped, {"p"}, ""),
        (f"| h |\n|---|\n| {escaped} |", {"table", "thead", "tbody", "tr", "th", "td"}, "h "),
        (f"## {escaped}", {"h2"}, ""),
    ):
        found = elements(render_markdown(source))
        assert {t for t, _ in found.tags} == tags, source
        assert " ".join(" ".join(found.text).split()) == prefix + expected, source


def test_label_cuts_long_names_with_an_ellipsis():
    assert label("abc") == "abc"
    cut = label("y" * 500)
    assert len(cut) == LABEL_CHARS and cut.endswith("…")
    assert label("line\nbreak") == "line break"


# -- figures -----------------------------------------------------------------------------------------
def test_figure_labels_are_literal_and_cut():
    """A `$...$` name is drawn as text (no mathtext: an invalid one used to raise when drawn)
    and a long name is cut to the label width."""
    from detailed_balance.reports import potential_forest_figure
    from detailed_balance.reports.document import figure_png
    from detailed_balance.reports.figures import point_tree

    names = [*HOSTILE, HOSTILE_LLM]
    tree = point_tree(pd.Series(np.linspace(-2, 2, len(names)), index=names))
    fig = potential_forest_figure(tree, n=len(names))
    assert figure_png(fig)[:4] == b"\x89PNG"
    drawn = []
    for tick in fig.axes[0].get_yticklabels():
        text, math = tick._preprocess_math(tick.get_text())
        assert math is False, tick.get_text()
        drawn.append(text)
    assert len(drawn) == len(names)
    assert all(len(text) <= LABEL_CHARS for text in drawn)
    assert "$x^2$" in drawn and "$\\undefinedmacro{$" in drawn
    assert any(t.startswith("long-x") and t.endswith("…") for t in drawn)


# -- memory: no fixed-width copies of long names -------------------------------------------------
def long_name_data(n_states: int = 30, length: int = 100_000) -> Transitions:
    panel = simulate_panel({"agent": 1.0}, n_states=n_states, visits=100, seed=2)
    data = panel.data
    first = data.states[0]
    name = "N" * length

    def swap(column):
        return column.where(column != first, name)

    counts = data.counts.assign(
        source=swap(data.counts["source"]), target=swap(data.counts["target"])
    )
    visits = data.visits.assign(source=swap(data.visits["source"]))
    return Transitions.from_counts(counts, visits)


def _wide_unicode(dataset) -> list[str]:
    """Variables/coordinates of an xarray Dataset stored as fixed-width unicode wider than 1 kB."""
    return [
        f"{k}: {v.dtype}"
        for k, v in {**dataset.data_vars, **dataset.coords}.items()
        if v.dtype.kind == "U" and v.dtype.itemsize > 4 * 1024
    ]


def test_a_long_name_is_not_copied_into_fixed_width_arrays():
    from detailed_balance.models import EquilibriumModel
    from detailed_balance.sampling import fit

    data = long_name_data()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = fit(EquilibriumModel(), data, method="map", seed=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    tree = result.posterior
    for group in tree.children.values():
        assert not _wide_unicode(group.to_dataset()), group.path
    # 30 states and ~200 count rows: a fixed-width copy of the count rows alone is 80 MB
    assert peak < 60e6, f"peak traced memory {peak / 1e6:.0f} MB"


def test_a_long_name_does_not_blow_up_the_report(tmp_path):
    from detailed_balance.sampling import fit, load_fit
    from detailed_balance.workflow import build_report

    data = long_name_data()
    from detailed_balance.models import EquilibriumModel

    path = tmp_path / "fit.nc"
    fit(EquilibriumModel(), data, method="map", seed=1).save(path)
    tracemalloc.start()
    try:
        loaded = load_fit(path)  # xarray itself decodes strings to <U{longest}: read around it
        _, load_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    for group in loaded.posterior.children.values():
        assert not _wide_unicode(group.to_dataset()), group.path
    assert load_peak < 40e6, f"load_fit: peak traced memory {load_peak / 1e6:.0f} MB"
    tracemalloc.start()
    try:
        doc, summary = build_report(loaded, other_method="map")
        html = doc.to_html()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "N" * 100_000 in {row["state"] for row in summary["states"]}
    assert "N" * (LABEL_CHARS + 1) not in html
    assert peak < 250e6, f"peak traced memory {peak / 1e6:.0f} MB"


def test_pair_data_keeps_names_as_objects():
    from detailed_balance.models import pair_data

    pairs = pair_data(long_name_data())
    for array in (pairs.states, pairs.cycle_names, pairs.unidentified):
        assert array.dtype == object
    assert pd.Index(pairs.states).str.len().max() == 100_000
