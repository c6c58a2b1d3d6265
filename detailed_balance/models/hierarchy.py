"""Multi-LLM hierarchical model: one shared landscape, per-LLM deviations and temperatures.

For LLM m and every pair (f, g) it saw in either direction, conditional on m_fg = n_fg + n_gf,

    n_fg ~ Binomial(m_fg, logit⁻¹(log(N_f/N_g) + β_m (U_mf − U_mg))),   U_m = μ + δ_m,

with μ the shared landscape (units of kT of the reference LLM, whose β is fixed at 1),
δ_{m,f} ~ N(0, τ_δ,m) the LLM's own deviations and β_m its inverse temperature.

Why the defaults are what they are (measured; see docs/models.md, "Hierarchical model"):

* The straightforward model puts a fixed wide prior on μ and one shared τ_δ. A wide prior makes
  every μ_f an incidental parameter: integrating it out costs each state a factor
  (Σ_m β_m² I_mf)^(-1/2), which rewards a small β for every non-reference LLM, and with sparse
  counts (I_mf small) the penalty is as large as the signal: the errors-in-variables /
  regression-dilution bias of the functional model. Giving μ a *fitted* scale σ_μ (the
  structural model) replaces that factor by the marginal likelihood of the observed spread,
  which is consistent for β whatever the shape of the true landscape.
* One shared τ_δ lets an odd LLM inflate everyone's deviations, and a deviation can absorb a
  multiple of μ (δ_m = c μ acts like β_m → β_m (1 + c)). Per-LLM scales τ_δ,m keep the
  deviations of LLMs that share the landscape near zero and name the odd one out; β_m is then
  only as trustworthy as τ_δ,m is small.
* μ is weighted by Fisher information, β_m² × counts: the coldest, busiest LLM dominates μ. That
  is correct, not a bias, but the reference LLM is best chosen as one with plenty of data.

The model follows the pair models' lifecycle: the constructor only stores configuration;
`prepare(data)` returns the `PanelArrays` (nothing is stored on the model); `build_model(arrays)`
makes the PyMC model; `detailed_balance.sampling.fit` samples it, like every model; and
`postprocess(arrays, draws)` turns raw draws into the gauge-fixed DataTree layout.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import scipy.sparse as sp
import xarray as xr
from scipy.sparse.csgraph import connected_components

from detailed_balance.data import DataError, Transitions

DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    # LLM whose β is fixed at 1 (None: the LLM with the most calls, which anchors μ best).
    "reference": None,
    # "fitted": μ ~ N(0, σ_μ) with σ_μ ~ HalfNormal(sigma_mu_scale) (structural; consistent β).
    # "wide": μ ~ N(0, wide_sd) fixed (the straightforward model; attenuates β on sparse data).
    "mu_prior": "fitted",
    "sigma_mu_scale": 3.0,
    "wide_sd": 10.0,
    # log β_m ~ N(log_beta_mu, log_beta_sd) for every non-reference LLM.
    "log_beta_mu": 0.0,
    "log_beta_sd": 1.0,
    # "per_llm": τ_δ,m ~ HalfNormal(tau_delta_scale) per LLM; "shared": one τ_δ for all.
    "deviations": "per_llm",
    "tau_delta_scale": 0.5,
}


@dataclass
class PanelArrays:
    """The numbers the likelihood needs, one row per (LLM, pair) with both visit counts known."""

    llms: list[str]
    states: pd.Index
    reference: str
    llm_index: np.ndarray  # (rows,) position in llms
    i: np.ndarray  # (rows,) state positions
    j: np.ndarray
    n_fg: np.ndarray
    n_gf: np.ndarray
    N_f: np.ndarray
    N_g: np.ndarray
    cell_llm: np.ndarray  # (cells,) LLM of each (LLM, state) deviation cell
    cell_state: np.ndarray  # (cells,) state of each cell
    cell_f: np.ndarray  # (rows,) cell index of the pair's f end
    cell_g: np.ndarray
    component: np.ndarray  # (states,) connected component of the union pair graph
    observed: np.ndarray  # (llms, states) bool: state is in one of the LLM's modelled pairs

    @property
    def n_pairs(self) -> int:
        return len(self.i)


def panel_arrays(data: Transitions, reference: str | None = None) -> PanelArrays:
    """Stack every LLM's pairs on the shared state index (vectorised per LLM)."""
    llms = data.llms
    if len(llms) < 2:
        raise DataError(
            f"the hierarchical model compares LLMs and the data has only {llms}; give data with "
            f"an `llm` column (or several files) covering at least two LLMs."
        )
    if reference is None:
        calls = data.visits.groupby("llm")["visits"].sum()
        reference = str(calls.idxmax())
    elif reference not in llms:
        raise DataError(f"reference LLM {reference!r} is not in the data ({', '.join(llms)}).")
    frames = []
    for m, name in enumerate(llms):  # a loop over LLMs (a handful), vectorised inside
        pairs = data.pairs(name)
        keep = np.isfinite(pairs["N_f"].to_numpy()) & np.isfinite(pairs["N_g"].to_numpy())
        frames.append(pairs[keep].assign(m=m))
    table = pd.concat(frames, ignore_index=True)
    if table.empty:
        raise DataError("no pair was seen with both of its states used as prompts; nothing to fit.")
    n = data.n_states
    m_idx, i, j = (table[c].to_numpy(np.int64) for c in ("m", "i", "j"))
    observed = np.zeros((len(llms), n), dtype=bool)
    observed[m_idx, i] = True
    observed[m_idx, j] = True
    cell_llm, cell_state = np.nonzero(observed)
    cell_of = np.full((len(llms), n), -1, dtype=np.int64)
    cell_of[cell_llm, cell_state] = np.arange(len(cell_llm))
    graph = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    component = connected_components(graph, directed=False)[1]
    return PanelArrays(
        llms=llms,
        states=data.states,
        reference=reference,
        llm_index=m_idx,
        i=i,
        j=j,
        n_fg=table["n_fg"].to_numpy(np.int64),
        n_gf=table["n_gf"].to_numpy(np.int64),
        N_f=table["N_f"].to_numpy(float),
        N_g=table["N_g"].to_numpy(float),
        cell_llm=cell_llm,
        cell_state=cell_state,
        cell_f=cell_of[m_idx, i],
        cell_g=cell_of[m_idx, j],
        component=component,
        observed=observed,
    )


class HierarchicalModel:
    """Shared landscape μ, per-LLM deviations δ_m (scale τ_δ,m) and temperatures β_m.

    `model_config` keys (merged over `DEFAULT_MODEL_CONFIG`): reference, mu_prior
    ("fitted" | "wide"), sigma_mu_scale, wide_sd, log_beta_mu, log_beta_sd, deviations
    ("per_llm" | "shared"), tau_delta_scale. Nothing is built or sampled in the constructor.
    """

    name = "hierarchical"
    default_model_config = DEFAULT_MODEL_CONFIG

    def __init__(self, model_config: dict[str, Any] | None = None) -> None:
        config = copy.deepcopy(DEFAULT_MODEL_CONFIG)
        unknown = set(model_config or {}) - set(config)
        if unknown:
            raise ValueError(
                f"unknown model_config key(s) {sorted(unknown)}; known: {sorted(config)}"
            )
        config.update(model_config or {})
        if config["mu_prior"] not in ("fitted", "wide"):
            raise ValueError(f"mu_prior must be 'fitted' or 'wide', not {config['mu_prior']!r}")
        if config["deviations"] not in ("per_llm", "shared"):
            raise ValueError(
                f"deviations must be 'per_llm' or 'shared', not {config['deviations']!r}"
            )
        self.model_config = config

    def config_json(self) -> str:
        """The model config as canonical JSON (stored in a fit's attrs; `load` compares it)."""
        return json.dumps(self.model_config, sort_keys=True)

    def coords(self, arrays: PanelArrays) -> dict[str, Any]:
        return {
            "llm": arrays.llms,
            "state": arrays.states.to_list(),
            "pair": np.arange(arrays.n_pairs),
            "cell": np.arange(len(arrays.cell_llm)),
        }

    def prepare(
        self, data: Transitions, llm: str | None = None, whiten: bool = True
    ) -> PanelArrays:
        """Every LLM's pairs on the shared state index (all LLMs: `llm` and `whiten`, there
        for the common model interface, are ignored)."""
        return panel_arrays(data, self.model_config["reference"])

    def build_model(self, arrays: PanelArrays) -> pm.Model:
        """The PyMC model (non-centred; the likelihood is one vectorised Binomial over rows)."""
        cfg = self.model_config
        n_llm = len(arrays.llms)
        ref = arrays.llms.index(arrays.reference)
        others = np.array([m for m in range(n_llm) if m != ref], dtype=np.int64)
        with pm.Model(coords=self.coords(arrays)) as model:
            if cfg["mu_prior"] == "fitted":
                sigma_mu = pm.HalfNormal("sigma_mu", sigma=cfg["sigma_mu_scale"])
            else:
                sigma_mu = pt.as_tensor_variable(float(cfg["wide_sd"]))
            mu_raw = pm.Normal("mu_raw", 0.0, 1.0, dims="state")
            mu = pm.Deterministic("mu", sigma_mu * mu_raw, dims="state")
            if cfg["deviations"] == "per_llm":
                tau = pm.HalfNormal("tau_delta", sigma=cfg["tau_delta_scale"], dims="llm")
                tau_cell = tau[arrays.cell_llm]
            else:
                tau_shared = pm.HalfNormal("tau_delta_shared", sigma=cfg["tau_delta_scale"])
                pm.Deterministic("tau_delta", tau_shared * pt.ones(n_llm), dims="llm")
                tau_cell = tau_shared
            delta_raw = pm.Normal("delta_raw", 0.0, 1.0, dims="cell")
            delta = tau_cell * delta_raw
            log_beta_free = pm.Normal(
                "log_beta_free", cfg["log_beta_mu"], cfg["log_beta_sd"], shape=len(others)
            )
            log_beta = pt.zeros(n_llm)
            log_beta = pt.set_subtensor(log_beta[others], log_beta_free)
            beta = pm.Deterministic("beta", pt.exp(log_beta), dims="llm")
            u_f = mu[arrays.i] + delta[arrays.cell_f]
            u_g = mu[arrays.j] + delta[arrays.cell_g]
            offset = np.log(arrays.N_f / arrays.N_g)
            logit_p = offset + beta[arrays.llm_index] * (u_f - u_g)
            pm.Binomial(
                "n_fg",
                n=arrays.n_fg + arrays.n_gf,
                logit_p=logit_p,
                observed=arrays.n_fg,
                dims="pair",
            )
        return model

    # -- turning raw draws into the reported, gauge-fixed layout ----------------------------------
    def postprocess(self, arrays: PanelArrays, idata: xr.DataTree) -> xr.DataTree:
        """Add gauge-fixed `V`, `V_llm`, `delta`, `landscape_correlation` and constant data.

        V (chain, draw, state): μ centred per connected component (reference kT units).
        V_llm (chain, draw, llm, state): β_m (μ + δ_m), the LLM's own potential in its own kT,
        centred per component over the states that LLM saw (NaN elsewhere).
        delta (chain, draw, llm, state): δ_m (NaN where the LLM saw nothing).
        landscape_correlation (chain, draw, llm_a, llm_b): Pearson r of μ + δ over the states
        both LLMs saw: do the two LLMs descend the same landscape?
        """
        raw = idata["posterior"].to_dataset()
        mu = raw["mu"].transpose("chain", "draw", "state").to_numpy()
        chains, draws, n = mu.shape
        n_llm = len(arrays.llms)
        delta = np.full((chains, draws, n_llm, n), np.nan)
        delta[:, :, arrays.cell_llm, arrays.cell_state] = raw["delta_raw"].to_numpy() * _tau_cells(
            raw, arrays
        )
        landscape = mu[:, :, None, :] + delta  # NaN where the LLM saw nothing
        beta = raw["beta"].transpose("chain", "draw", "llm").to_numpy()
        own = beta[..., None] * landscape
        identified = arrays.observed.any(axis=0)
        v = _centre(mu, arrays.component, identified)[..., identified]
        v_llm = np.stack(
            [_centre(own[:, :, m], arrays.component, arrays.observed[m]) for m in range(n_llm)],
            axis=2,
        )[..., identified]
        states = arrays.states.to_numpy()
        coords = {
            "chain": raw["chain"].to_numpy(),
            "draw": raw["draw"].to_numpy(),
            "llm": arrays.llms,
            "state": states[identified],
            "llm_a": arrays.llms,
            "llm_b": arrays.llms,
        }
        cd, cdl = ("chain", "draw"), ("chain", "draw", "llm")
        post = xr.Dataset(
            {
                "V": (cd + ("state",), v),
                "V_llm": (cdl + ("state",), v_llm),
                "delta": (cdl + ("state",), delta[..., identified]),
                "beta": (cdl, beta),
                "tau_delta": (cdl, raw["tau_delta"].transpose(*cdl).to_numpy()),
                "landscape_correlation": (
                    cd + ("llm_a", "llm_b"),
                    _landscape_correlation(landscape, arrays.observed),
                ),
            },
            coords=coords,
            attrs=dict(raw.attrs),
        )
        if "sigma_mu" in raw:
            post["sigma_mu"] = (cd, raw["sigma_mu"].transpose(*cd).to_numpy())
        post.attrs["unidentified_states"] = json.dumps(states[~identified].tolist())
        post.attrs["reference_llm"] = arrays.reference
        groups = {name: idata[name].to_dataset() for name in idata.children}
        groups["posterior"] = post
        groups["constant_data"] = self.constant_data(arrays, identified)
        tree = xr.DataTree.from_dict({f"/{k}": v for k, v in groups.items()})
        tree.attrs.update(idata.attrs)
        tree.attrs["reference_llm"] = arrays.reference
        return tree

    def constant_data(self, arrays: PanelArrays, identified: np.ndarray) -> xr.Dataset:
        states = arrays.states.to_numpy()
        return xr.Dataset(
            {
                "pair_llm": ("pair", np.asarray(arrays.llms, dtype=object)[arrays.llm_index]),
                "pair_f": ("pair", states[arrays.i]),
                "pair_g": ("pair", states[arrays.j]),
                "pair_i": ("pair", arrays.i),
                "pair_j": ("pair", arrays.j),
                "n_fg": ("pair", arrays.n_fg),
                "n_gf": ("pair", arrays.n_gf),
                "N_f": ("pair", arrays.N_f),
                "N_g": ("pair", arrays.N_g),
                "component": ("state_all", arrays.component),
                "identified": ("state_all", identified),
                "observed": (("llm", "state_all"), arrays.observed),
            },
            coords={
                "pair": np.arange(arrays.n_pairs),
                "state_all": states,
                "llm": arrays.llms,
            },
        )


def _tau_cells(post: xr.Dataset, arrays: PanelArrays) -> np.ndarray:
    tau = post["tau_delta"].transpose("chain", "draw", "llm").to_numpy()
    return tau[:, :, arrays.cell_llm]


def _centre(values: np.ndarray, component: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Subtract, per draw, the mean over `mask` states of each component (NaN outside mask)."""
    labels = np.where(mask, component, -1)
    uniq, inv = np.unique(labels, return_inverse=True)
    n = values.shape[-1]
    member = sp.csr_matrix((mask.astype(float), (np.arange(n), inv)), shape=(n, len(uniq)))
    flat = np.where(mask, values, 0.0).reshape(-1, n)
    sizes = np.maximum(np.asarray(member.sum(axis=0)).ravel(), 1.0)
    means = np.asarray(member.T @ flat.T).T / sizes
    out = flat - means[:, inv]
    out[:, ~mask] = np.nan
    return out.reshape(values.shape)


def _landscape_correlation(landscape: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Per draw, Pearson r of two LLMs' landscapes over the states both saw (llm × llm)."""
    chains, draws, n_llm, _ = landscape.shape
    out = np.ones((chains, draws, n_llm, n_llm))
    for a in range(n_llm):  # LLM pairs: a handful; vectorised over draws and states
        for b in range(a + 1, n_llm):
            both = observed[a] & observed[b]
            if both.sum() < 3:
                out[:, :, a, b] = out[:, :, b, a] = np.nan
                continue
            x = landscape[:, :, a, both]
            y = landscape[:, :, b, both]
            x = x - x.mean(axis=-1, keepdims=True)
            y = y - y.mean(axis=-1, keepdims=True)
            with np.errstate(divide="ignore", invalid="ignore"):  # a flat landscape: r is NaN
                r = (x * y).sum(-1) / np.sqrt((x * x).sum(-1) * (y * y).sum(-1))
            out[:, :, a, b] = out[:, :, b, a] = r
    return out


def interval(values: xr.DataArray, ci: float = 0.9, dims: tuple[str, ...] = ("chain", "draw")):
    """Posterior mean and central `ci` interval as a DataFrame/Series-ready Dataset."""
    lo, hi = (1 - ci) / 2, 1 - (1 - ci) / 2
    with warnings.catch_warnings():  # an undefined cell (e.g. r over < 3 shared states) is NaN
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        return xr.Dataset(
            {
                "mean": values.mean(dims),
                "lower": values.quantile(lo, dims).drop_vars("quantile"),
                "upper": values.quantile(hi, dims).drop_vars("quantile"),
            }
        )


def temperature_table(tree: xr.DataTree, ci: float = 0.9) -> pd.DataFrame:
    """Per LLM: β (mean, interval) and deviation scale τ_δ (mean, interval); index llm."""
    post = tree["posterior"]
    beta = interval(post["beta"], ci).to_dataframe()
    tau = interval(post["tau_delta"], ci).to_dataframe()
    table = beta.add_prefix("beta_").join(tau.add_prefix("tau_delta_"))
    table["reference"] = table.index == tree.attrs.get("reference_llm")
    table["odd_one_out"] = table.index == odd_one_out(tree, ci)
    return table


def odd_one_out(tree: xr.DataTree, ci: float = 0.9, floor: float = 0.1) -> str | None:
    """The LLM that does not share the landscape, or None.

    Named when its deviation scale τ_δ,m is clearly non-zero (lower `ci` bound above `floor`)
    and its lower bound is above every other LLM's upper bound.
    """
    tau = interval(tree["posterior"]["tau_delta"], ci).to_dataframe()
    if len(tau) < 2:
        return None
    top = tau["lower"].idxmax()
    rest = tau.drop(index=top)
    if tau.loc[top, "lower"] > floor and tau.loc[top, "lower"] > rest["upper"].max():
        return str(top)
    return None


def landscape_correlations(tree: xr.DataTree, ci: float = 0.9) -> dict[str, dict[str, float]]:
    """{"A|B": {"mean", "lower", "upper"}} for every pair of LLMs (A before B, sorted)."""
    corr = tree["posterior"]["landscape_correlation"]
    names = [str(x) for x in corr["llm_a"].to_numpy()]
    stats = interval(corr, ci)
    out = {}
    for a_pos, a in enumerate(names):
        for b in names[a_pos + 1 :]:
            cell = stats.sel(llm_a=a, llm_b=b)
            out[f"{a}|{b}"] = {k: _float(cell[k]) for k in ("mean", "lower", "upper")}
    return out


def _float(value: xr.DataArray) -> float | None:
    number = float(value)
    return None if not np.isfinite(number) else number
