"""The paper's conditioned word-generation agent: words whose letters sum to 100.

Letters A..Z are worth 1..26. The prompt shows a word whose letters sum to 100 and asks for a
new one; a valid answer is one alphabetic word, summing to 100, in the bundled English word
list (unless ``dictionary=False``), and different from the prompt word. Everything else pools
into `INVALID` with the reason recorded. States are upper-case words; the seed is BUZZY.

The word list and letter values are `detailed_balance.features.words` (the bundled SCOWL-50
list, 63,875 words, plus BUZZY, the paper's seed, which SCOWL lacks).
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from detailed_balance.features.words import letter_sum, word_list

from .spec import INVALID, Agent, Messages, Parsed

SEED_WORD = "BUZZY"
TARGET_SUM = 100
# The prompt wording is ours; the simulated LLM finds the state with PROMPT_STATE.
PROMPT = (
    "Letters are worth A=1, B=2, ..., Z=26. The letters of the word {word} add up to 100. "
    "Give a different English word whose letters also add up to 100. "
    "Answer with the word only."
)
PROMPT_STATE = re.compile(r"The letters of the word ([A-Z]+) add up to")
_STRIP = " \t\r\n.,;:!?\"'`*_()[]{}<>"


@lru_cache(maxsize=1)
def words_summing_to_100() -> tuple[str, ...]:
    """All bundled words whose letters sum to 100, sorted (757 words + BUZZY)."""
    words = np.array(sorted(word_list()))
    lengths = np.char.str_len(words)
    # Vectorised letter sums: pad to a fixed width as bytes, subtract 64 where a letter exists.
    width = int(lengths.max())
    codes = np.frombuffer(words.astype(f"S{width}").tobytes(), dtype=np.uint8)
    codes = codes.reshape(len(words), width).astype(np.int64)
    sums = np.where(codes > 0, codes - 64, 0).sum(axis=1)
    return tuple(words[sums == TARGET_SUM].tolist())


def build_messages(word: str) -> Messages:
    return [{"role": "user", "content": PROMPT.format(word=word)}]


def parse_answer(answer: str | None, source: str, *, dictionary: bool = True) -> Parsed:
    """Classify an answer; the reason says exactly why an invalid one was rejected."""
    text = (answer or "").strip().strip(_STRIP)
    if not text:
        return Parsed(INVALID, False, "empty answer")
    if len(text) > 64:
        return Parsed(INVALID, False, "answer longer than 64 characters")
    tokens = text.split()
    if len(tokens) != 1:
        return Parsed(INVALID, False, "not a single word")
    word = tokens[0].strip(_STRIP).upper()
    if not (word.isascii() and word.isalpha()):
        return Parsed(INVALID, False, "not alphabetic")
    total = letter_sum(word)
    if total != TARGET_SUM:
        return Parsed(INVALID, False, f"letters sum to {total}, not 100")
    if dictionary and word not in word_list():
        return Parsed(INVALID, False, "not in the word list")
    if word == source.upper():
        return Parsed(INVALID, False, "same as the prompt word")
    return Parsed(word, True, None)


def word100_agent(
    *, dictionary: bool = True, seed: str = SEED_WORD, policy: str = "uniform"
) -> Agent:
    """The word-sum-100 agent; ``dictionary=False`` accepts any alphabetic word summing to 100."""
    if letter_sum(seed) != TARGET_SUM or not seed.isalpha():
        raise ValueError(f"seed word {seed!r} does not sum to 100 (letters A=1..Z=26).")

    def parse(answer: str, source: str) -> Parsed:
        return parse_answer(answer, source, dictionary=dictionary)

    return Agent(
        name="word100",
        seed_states=[seed.upper()],
        build_messages=build_messages,
        parse=parse,
        policy=policy,  # type: ignore[arg-type]
        describe={"dictionary": dictionary, "seed": seed.upper()},
    )
