"""Words as states: the bundled English word list and letter values (A=1..Z=26).

The word list (`data/words.txt`, 63,875 lower-case alphabetic words) is derived from Debian's
``wamerican`` package (SCOWL size 50; licence in `data/WORDS-LICENSE.txt`). BUZZY, the paper's
seed, is not in SCOWL and is accepted as a word explicitly.

This is data knowledge (what a word state is), shared by the word-sum-100 agent
(`detailed_balance.agents.word100`) and the word featuriser (`features.builtin`).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

EXTRA_WORDS = frozenset({"BUZZY"})


def letter_sum(word: str) -> int:
    """Sum of letter values (A=1..Z=26) of an alphabetic word, case-insensitive."""
    codes = np.frombuffer(word.upper().encode("ascii"), dtype=np.uint8)
    return int((codes.astype(np.int64) - 64).sum())


@lru_cache(maxsize=1)
def word_list() -> frozenset[str]:
    """The bundled English word list, upper-case (plus the paper's seed word)."""
    text = resources.files(__package__).joinpath("data/words.txt").read_text("ascii")
    words = [w for w in text.split("\n") if w and not w.startswith("#")]
    return frozenset(w.upper() for w in words) | EXTRA_WORDS
