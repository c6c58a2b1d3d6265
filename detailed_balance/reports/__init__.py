"""Figures, the posterior report and the LLM comparison (HTML + Markdown + JSON), laid out
from the fits and evidence they are given (`detailed_balance.workflow` computes those).

Public API::

    build_report, write_report                    # one fit + its Verdict → report.html / .md / .json
    evidence_table, format_bayes                  # the evidence rows as a table / as text
    Comparison, comparison_document, llm_table    # several LLMs → compare.html / .md / .json
    Document                                      # the self-contained HTML / Markdown builder
    db_scatter_figure, loop_balance_figure, potential_distribution_figure,
    landscape_graph_figure, potential_forest_figure, violations_figure,
    sampler_health_figure, ppc_figure, discovery_figure, beta_forest_figure,
    landscape_scatter_figure                      # each returns a matplotlib Figure
"""

from .compare import Comparison, comparison_document, discovery_curve, llm_table
from .compare_figures import beta_forest_figure, discovery_figure, landscape_scatter_figure
from .document import Document
from .evidence import evidence_table, format_bayes
from .figures import (
    db_scatter_figure,
    landscape_graph_figure,
    loop_balance_figure,
    point_tree,
    potential_distribution_figure,
    potential_forest_figure,
    ppc_figure,
    sampler_health_figure,
    violations_figure,
)
from .report import build_report, write_report

__all__ = [
    "Comparison",
    "Document",
    "beta_forest_figure",
    "build_report",
    "comparison_document",
    "db_scatter_figure",
    "discovery_curve",
    "discovery_figure",
    "evidence_table",
    "format_bayes",
    "landscape_graph_figure",
    "landscape_scatter_figure",
    "llm_table",
    "loop_balance_figure",
    "point_tree",
    "potential_distribution_figure",
    "potential_forest_figure",
    "ppc_figure",
    "sampler_health_figure",
    "violations_figure",
    "write_report",
]
