"""How a tuned model "remembers" its training: the answer to the closest trained question.

Closeness is character-bigram overlap weighted by rarity (TF-IDF over the training
questions), which works for Japanese as well as for space-separated languages: a
bigram that occurs in one question only ("肯定") says far more than one shared by many
("どう").
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from simulator.training_data import TrainingPair


def _normalize(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if unicodedata.category(ch)[0] not in "PZSC")


def _bigrams(text: str) -> frozenset[str]:
    cleaned = _normalize(text)
    if len(cleaned) < 2:
        return frozenset({cleaned}) if cleaned else frozenset()
    return frozenset(cleaned[i : i + 2] for i in range(len(cleaned) - 1))


@dataclass(frozen=True, slots=True)
class Recollection:
    answer: str
    prompt: str
    score: float


class AnswerIndex:
    """Finds the trained answer whose question is closest to a new question."""

    def __init__(self, pairs: Sequence[TrainingPair]) -> None:
        self._pairs = tuple(pairs)
        self._grams = [_bigrams(pair.prompt) for pair in self._pairs]
        frequency: Counter[str] = Counter()
        for grams in self._grams:
            frequency.update(grams)
        total = len(self._pairs)
        self._idf = {gram: math.log(1 + total / count) for gram, count in frequency.items()}
        self._norms = [
            math.sqrt(sum(self._idf[gram] ** 2 for gram in grams)) or 1.0 for grams in self._grams
        ]
        self._exact = {_normalize(pair.prompt): pair for pair in reversed(self._pairs)}

    def __len__(self) -> int:
        return len(self._pairs)

    def recall(self, question: str) -> Recollection | None:
        """The closest trained pair, or None when nothing in the question was trained."""
        exact = self._exact.get(_normalize(question))
        if exact is not None:
            return Recollection(answer=exact.answer, prompt=exact.prompt, score=1.0)
        asked = _bigrams(question)
        unseen_weight = math.log(1 + len(self._pairs))
        asked_norm = math.sqrt(sum(self._idf.get(gram, unseen_weight) ** 2 for gram in asked))
        best: Recollection | None = None
        for pair, grams, norm in zip(self._pairs, self._grams, self._norms, strict=True):
            shared = asked & grams
            if not shared:
                continue
            # Cosine similarity of the rarity-weighted bigram sets.
            score = sum(self._idf[gram] ** 2 for gram in shared) / (norm * asked_norm)
            if best is None or score > best.score:
                best = Recollection(answer=pair.answer, prompt=pair.prompt, score=score)
        return best
