"""State features for the feature potential V = x·θ + ε (`detailed_balance.models.features`).

Public API::

    word_features(states)            # built-in: length, vowel share, letter values, dictionary
    expression_features(states)      # built-in: length, depth, operators, parameters, validity
    resolve_features(source, states) # builtin:NAME | CSV path | DataFrame | callable → DataFrame
    read_feature_csv(path)           # `state` + numeric columns, checked
    Standardiser                     # centre/scale over the modelled states; θ back to units
    WORD_FEATURES, EXPRESSION_FEATURES, BUILTIN
    expressions.parse_expression, expressions.canonicalise   # the expression language
    words.word_list, words.letter_sum                         # the bundled word list

What a fitted feature potential says (θ, share explained, predictions) is in
`detailed_balance.diagnostics` (`theta_summary`, `feature_share`, ...). This unit imports only
`detailed_balance.data`: agents and models both build on it.
"""

from .builtin import BUILTIN, EXPRESSION_FEATURES, WORD_FEATURES, expression_features, word_features
from .table import (
    FeatureSource,
    Standardiser,
    describe_source,
    read_feature_csv,
    resolve_features,
)

__all__ = [
    "BUILTIN",
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
