"""The verdict as a job: fit the model a verdict lacks, then `diagnostics.bayes_verdict`.

`bayes_check(data, eq_fit, neq_fit, method)` is the ``bayes`` object of ``check --posterior``
and the demo; `bayes_from_files` reads saved fits first (``check DATA --posterior fit.nc``).
The diagnostics themselves are pure functions of the fits they are given; fitting the missing
model (`_fit_model`, through the public `detailed_balance.sampling.fit`) happens only here.
"""

from __future__ import annotations

from typing import Any

from detailed_balance.diagnostics import (
    CI,
    FDR_Q,
    FitError,
    Verdict,
    as_tree,
    bayes_verdict,
    same_data,
)
from detailed_balance.models import EquilibriumModel, NonEquilibriumModel
from detailed_balance.sampling import fit, load_fit


def _model_name(result: Any) -> str:
    tree = as_tree(result)
    name = str(tree.attrs.get("model", "")).lower()
    if "non" in name:
        return "nonequilibrium"
    if name:
        return "equilibrium"
    return "nonequilibrium" if "A" in tree["posterior"].data_vars else "equilibrium"


QUICK_METHODS = ("auto", "map", "nuts", "advi")


def bayes_check(
    data: Any = None,
    eq_fit: Any = None,
    neq_fit: Any = None,
    *,
    method: str = "auto",
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    seed: int = 1,
    fdr: float = FDR_Q,
    ci: float = CI,
    llm: str | None = None,
    progressbar: bool = False,
    return_verdict: bool = False,
) -> dict[str, Any] | Verdict:
    """The ``bayes`` JSON object for `data`: fits what is missing, then `bayes_verdict`.

    Pass one or both fits (`BayesFit` or DataTree, either model in either slot is sorted out by
    the fit's ``model`` attr). A missing model is fitted to the same data with `method`:

    - ``"auto"`` (default) = ``"map"``: MAP + Laplace draws for both models, seconds. The
      calibration tests check this path's verdict (reversible: ``violated`` ≤ 10%; driven:
      ≥ 90%) and its equilibrium intervals (cover 85–95%). Its non-equilibrium draws hold
      τ_A at one value, so per-cycle loop-affinity intervals are too narrow on sparse graphs:
      fit that model by NUTS when those intervals matter;
    - ``"nuts"`` (`draws`/`tune`/`chains`, default 4 × 1000 after 1000), ``"advi"`` (its
      draws make PSIS-LOO unreliable: the ELPD difference is reported but rarely decisive).

    `data` may be omitted when a fit is given (the fit carries its data). With several LLMs
    in `data`, `llm` (default: the LLM of a given fit) says which one. The methods used are
    recorded in the result under ``fitted_here``.
    """
    if method not in QUICK_METHODS:
        raise FitError(f"method must be one of {', '.join(QUICK_METHODS)}, got {method!r}.")
    fits = {}
    for given in (eq_fit, neq_fit):
        if given is not None:
            fits[_model_name(given)] = given
    if data is None:
        if not fits:
            raise FitError("bayes_check needs transition data or at least one fit.")
        data = _fit_data(next(iter(fits.values())))
    if llm is None and fits:
        llm = str(as_tree(next(iter(fits.values()))).attrs.get("llm", "")) or None
    fitted_here = {}
    for name in ("equilibrium", "nonequilibrium"):
        if name in fits:
            continue
        chosen = "map" if method == "auto" else method
        settings = _quick_settings(chosen, draws, tune, chains)
        fits[name] = _fit_model(name, data, chosen, settings, seed, llm, progressbar)
        fitted_here[name] = {"method": chosen, **settings}
    verdict = bayes_verdict(fits["equilibrium"], fits["nonequilibrium"], fdr=fdr, ci=ci, seed=seed)
    verdict.evidence["fitted_here"] = fitted_here
    return verdict if return_verdict else verdict.evidence


def _quick_settings(
    chosen: str, draws: int | None, tune: int | None, chains: int | None
) -> dict[str, int]:
    if chosen == "nuts":
        base = {"draws": 1000, "tune": 1000, "chains": 4}
    else:
        base = {"draws": 1000, "tune": 0, "chains": 1}
    given = {"draws": draws, "tune": tune, "chains": chains}
    return {k: int(given[k]) if given[k] is not None else v for k, v in base.items()}


def bayes_from_files(
    data: Any,
    paths: list[str],
    *,
    method: str = "auto",
    seed: int = 1,
    fdr: float = FDR_Q,
    ci: float = CI,
) -> Verdict:
    """`bayes_check` for saved fits (what ``check DATA --posterior fit.nc`` runs).

    One or two files (an equilibrium and/or a non-equilibrium fit of DATA); the missing model
    is fitted here with `method`. A fit made on other data than DATA is refused (data hash).
    """
    if not 1 <= len(paths) <= 2:
        raise FitError("give --posterior once or twice (an equilibrium and/or a non-eq fit).")
    fits: dict[str, Any] = {}
    for path in paths:
        try:
            fitted = load_fit(path)
        except ValueError as exc:  # FitFileError: not a fit, damaged, wrong model
            raise FitError(str(exc)) from None
        if data is not None and not same_data(data, fitted):
            raise FitError(
                f"{path} was fitted to different data than the DATA given (their counts or "
                f"visits differ); pass the transitions and visits the fit was made from "
                f"(same --visits/--llm), or refit with `detailed-balance fit`."
            )
        name = _model_name(fitted)
        if name in fits:
            raise FitError(
                f"two {name} fits given ({paths[0]}, {path}); give one equilibrium and one "
                "non-equilibrium fit."
            )
        fits[name] = fitted
    return bayes_check(
        data,
        fits.get("equilibrium"),
        fits.get("nonequilibrium"),
        method=method,
        seed=seed,
        fdr=fdr,
        ci=ci,
        return_verdict=True,
    )


def _fit_data(result: Any) -> Any:
    data = getattr(result, "data", None)
    if data is None:
        raise FitError(
            "the fit carries no transition data (a bare DataTree); pass the transitions as "
            "`data`, or load the fit with detailed_balance.sampling.load_fit."
        )
    return data


def _fit_model(
    name: str,
    data: Any,
    method: str,
    settings: dict[str, int],
    seed: int,
    llm: str | None,
    progressbar: bool,
) -> Any:
    model = EquilibriumModel() if name == "equilibrium" else NonEquilibriumModel()
    kwargs: dict[str, Any] = {"draws": settings["draws"], "chains": settings["chains"]}
    if method == "nuts":
        kwargs.update(tune=settings["tune"], sampler="nutpie")
    if llm is not None and len(data.llms) > 1:
        kwargs["llm"] = llm
    return fit(model, data, method=method, seed=seed, progressbar=progressbar, **kwargs)
