"""State features for the feature potential V = x·θ + ε (`detailed_balance.models.features`).

Public API::

    word_features(states)            # built-in: length, vowel share, letter values, dictionary
    expression_features(states)      # built-in: length, depth, operators, parameters, validity
    resolve_features(source, states) # builtin:NAME | CSV path | DataFrame | callable → DataFrame
    read_feature_csv(path)           # `state` + numeric columns, checked
    Standardiser                     # centre/scale over the modelled states; θ back to units
    theta_summary(fit, ci)           # feature,mean,sd,lower,upper (θ per unit; the theta.csv)
    feature_share(fit, ci)           # share of V's spread explained by the features (headline)
    sigma_eps(fit, ci)               # scale of what the features leave unexplained
    predict_potentials(fit, states)  # V with intervals for states never observed
    feature_downhill(fit)            # downhill fraction under x·θ, with an interval
    compare_free(feature_fit, free)  # PSIS-LOO against the free-V equilibrium model
    feature_summary(fit, ci)         # the JSON-ready headline numbers
    WORD_FEATURES, EXPRESSION_FEATURES, BUILTIN
"""

from .builtin import BUILTIN, EXPRESSION_FEATURES, WORD_FEATURES, expression_features, word_features
from .posterior import (
    NotAFeatureFit,
    compare_free,
    feature_downhill,
    feature_share,
    feature_summary,
    has_features,
    predict_potentials,
    sigma_eps,
    theta_summary,
)
from .table import (
    FeatureSource,
    Standardiser,
    describe_source,
    read_feature_csv,
    resolve_features,
)

__all__ = [
    "BUILTIN",
    "NotAFeatureFit",
    "compare_free",
    "feature_downhill",
    "feature_share",
    "feature_summary",
    "has_features",
    "predict_potentials",
    "sigma_eps",
    "theta_summary",
    "EXPRESSION_FEATURES",
    "FeatureSource",
    "Standardiser",
    "WORD_FEATURES",
    "describe_source",
    "expression_features",
    "read_feature_csv",
    "resolve_features",
    "word_features",
]
