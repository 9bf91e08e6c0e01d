"""ONION-style trigger filter (Qi et al., EMNLP'21): words that make a title less fluent.

A backdoor trigger is usually out of place, so removing it makes the text more likely under a
language model. For every title and each of its words we compare the LM's per-token negative
log-likelihood (log-perplexity) of the title with and without that word:
``suspicion(w) = logppl(title) - logppl(title without w)``. An item's score is its largest
suspicion. Log-likelihoods come from the shared LLM service (``score``: the title variants are
the "choices" after a fixed context), token counts from the model's own tokenizer.

Unlike P-Scanner, ONION needs no training and no trigger examples. The decision threshold is
the ``1 - pscanner_fpr`` quantile of the clean mode of all items' scores (median + z·MAD, robust
to the poisoned minority; see ``common.robust_threshold``), never below 0: flagged items
lose every word whose suspicion passes it. Single-word
removal cannot see a multi-word sentence trigger whole, a known weakness of ONION.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..data.registry import catalogue_words
from ..errors import ModelOutputError
from .base import DefenseContext, Sanitation
from .common import robust_threshold

MAX_WORDS = 24  # longer titles: only the last MAX_WORDS words are candidates (cost bound)


def _variants(title: str) -> tuple[list[str], list[str]]:
    words = title.split()
    first = max(0, len(words) - MAX_WORDS)
    drops = [" ".join(words[:i] + words[i + 1:]) for i in range(first, len(words))]
    return words, [title] + drops


def word_suspicion(ctx: DefenseContext, titles: list[str], tokenizer, context: str,
                   workers: int = 8) -> list[np.ndarray]:
    """Per title, the suspicion of each candidate word (empty for titles of < 2 words)."""
    assert ctx.llm is not None
    model = ctx.llm_settings.model

    def one(title: str) -> np.ndarray:
        words, variants = _variants(title)
        if len(words) < 2:
            return np.zeros(0)
        choices = [" " + v for v in variants]
        logp = np.asarray(ctx.llm.score([context], choices, model=model), dtype=np.float64)
        if logp.shape != (1, len(choices)) or not np.isfinite(logp).all():
            raise ModelOutputError(f"llm.model: score() returned {logp.shape} / non-finite "
                                   f"log-probabilities for {len(choices)} title variants")
        ntok = np.array([max(1, len(tokenizer(c, add_special_tokens=False)["input_ids"]))
                         for c in choices])
        logppl = -logp[0] / ntok
        return logppl[0] - logppl[1:]

    # concurrent calls let the service batch titles together
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, titles))


def onion(ctx: DefenseContext) -> Sanitation:
    if ctx.llm is None:
        raise ModelOutputError("defense.name: onion needs an LLM client")
    from ..llm.backend import load_model_info

    data = ctx.data
    tokenizer = load_model_info(ctx.llm_settings.model).tokenizer
    context = f"A title from a catalogue of {catalogue_words(data.name).domain}:"
    sus = word_suspicion(ctx, data.titles[1:], tokenizer, context)
    scores = np.zeros(data.n_items + 1)
    scores[1:] = [s.max() if len(s) else 0.0 for s in sus]
    threshold = max(robust_threshold(scores[1:], ctx.cfg.pscanner_fpr), 0.0)
    flagged = scores > threshold
    titles = list(data.titles)
    stripped = 0
    for i in np.flatnonzero(flagged):
        words = titles[i].split()
        first = max(0, len(words) - MAX_WORDS)
        drop = {first + j for j in np.flatnonzero(sus[i - 1] > threshold)}
        titles[i] = " ".join(w for k, w in enumerate(words) if k not in drop)
        stripped += len(drop)
    san = Sanitation.keep_all(data)
    san.titles = titles
    san.item_scores = scores
    san.item_threshold = float(np.nextafter(threshold, np.inf))  # metrics flag at >=
    san.stats = {"flagged_items": float(flagged.sum()), "words_stripped": float(stripped),
                 "threshold": threshold}
    return san
