"""Workflow: the only place that runs several steps (fit, then test, then lay out).

Below it the layers are pure: `diagnostics` are functions of the fits they are given,
`reports` lay out the numbers and figures they are given. `commands` parse arguments and make
one call here (or into a library layer).

Public API::

    bayes_check, bayes_from_files     # the verdict, fitting the model it lacks (check --posterior)
    compute_evidence, build_report, write_report   # the report of one fit (report)
    compare_llms, llm_verdict         # the hierarchy over several LLMs + their verdicts (compare)
    run_demo, run_compare_demo        # the demo end to end; two simulated LLMs → compare.html
    calibrate, Calibration            # design-matched calibration of the verdict on dask (calibrate)
    fit_many                          # one model, many data sets, in parallel on dask (fit-many)
"""

from .calibration import Calibration, calibrate
from .compare import compare_llms, llm_verdict, usable_llms
from .demo import DEMO_BETAS, run_compare_demo, run_demo
from .fit_many import fit_many
from .report import build_report, compute_evidence, write_report
from .verdict import QUICK_METHODS, bayes_check, bayes_from_files

__all__ = [
    "DEMO_BETAS",
    "Calibration",
    "QUICK_METHODS",
    "bayes_check",
    "bayes_from_files",
    "build_report",
    "calibrate",
    "compare_llms",
    "compute_evidence",
    "fit_many",
    "llm_verdict",
    "run_compare_demo",
    "run_demo",
    "usable_llms",
    "write_report",
]
