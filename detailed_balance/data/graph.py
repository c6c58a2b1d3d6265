"""Connected pieces of a graph given as edge lists: the one place that labels components.

Every part of the package that needs strongly connected pieces (least action, the pair
models' bounded states, the fit reader, the simulator's irreducibility check) or components
of the undirected pair graph calls these, so the labels mean the same thing everywhere.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components


def _graph(source: np.ndarray, target: np.ndarray, n: int) -> sp.csr_matrix:
    source = np.asarray(source, dtype=np.int64)
    target = np.asarray(target, dtype=np.int64)
    return sp.csr_matrix((np.ones(len(source)), (source, target)), shape=(n, n))


def strong_components(source: np.ndarray, target: np.ndarray, n: int) -> np.ndarray:
    """Label (0..k-1) of the strongly connected piece of each of `n` nodes of the directed
    graph with edges source → target."""
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    return connected_components(_graph(source, target, n), directed=True, connection="strong")[1]


def weak_components(source: np.ndarray, target: np.ndarray, n: int) -> np.ndarray:
    """Label of the component of each node of the undirected graph with these edges."""
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    return connected_components(_graph(source, target, n), directed=False)[1]


def component_sizes(labels: np.ndarray) -> np.ndarray:
    """Size of each node's component (aligned with `labels`)."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.bincount(labels)[labels]
