"""Figures, the posterior report and the LLM comparison (HTML + Markdown + JSON).

Public API::

    build_report, write_report                    # one fit → report.html / .md / report.json
    compare_llms, Comparison, comparison_document # several LLMs → compare.html / .md / .json
    run_compare_demo                              # two simulated LLMs → compare.html (demo)
    simulate_panel, Panel                         # simulated LLMs with known β and landscapes
    Document                                      # the self-contained HTML / Markdown builder
    db_scatter_figure, loop_balance_figure, potential_distribution_figure,
    landscape_graph_figure, potential_forest_figure, violations_figure,
    sampler_health_figure, ppc_figure, discovery_figure, beta_forest_figure,
    landscape_scatter_figure                      # each returns a matplotlib Figure
"""

from .compare import Comparison, compare_llms, comparison_document, discovery_curve
from .demo import run_compare_demo
from .document import Document
from .figures import (
    beta_forest_figure,
    db_scatter_figure,
    discovery_figure,
    landscape_graph_figure,
    landscape_scatter_figure,
    loop_balance_figure,
    point_tree,
    potential_distribution_figure,
    potential_forest_figure,
    ppc_figure,
    sampler_health_figure,
    violations_figure,
)
from .panel import Panel, simulate_panel
from .report import build_report, write_report

__all__ = [
    "Comparison",
    "Document",
    "Panel",
    "beta_forest_figure",
    "build_report",
    "compare_llms",
    "comparison_document",
    "db_scatter_figure",
    "discovery_curve",
    "discovery_figure",
    "landscape_graph_figure",
    "landscape_scatter_figure",
    "loop_balance_figure",
    "point_tree",
    "potential_distribution_figure",
    "potential_forest_figure",
    "ppc_figure",
    "run_compare_demo",
    "sampler_health_figure",
    "simulate_panel",
    "violations_figure",
    "write_report",
]
