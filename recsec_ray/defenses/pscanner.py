"""P-Scanner: find and neutralise backdoor triggers in item titles before the victim trains.

1. The trigger-augmentation agent (``triggers.TriggerAgent``: the LLM, with a documented
   fallback) writes ``pscanner_triggers`` synthetic char/word/sentence triggers per round.
2. The scanner (``scanner.LoraScanner``: base LLM + LoRA on its top layers, over the lower
   layers' states the shared service computes once per prompt and caches) learns Yes/No on
   contrastive pairs (a clean title / the same title with a synthetic trigger) over
   ``pscanner_train_titles`` titles. Titles are the defender's observed ones, so a poisoned
   title can land among the "clean" examples; from round 2 on, training titles the scanner
   already calls triggered (P(Yes) > 0.9) are dropped from the No class (self-cleaning).
3. Rounds: each round's triggers are tried on held-out titles; those the scanner misses seed the
   agent's next prompt, and training continues on the new triggers (with a replay of old ones).
4. The adapter is saved (safetensors), loaded into the shared LLM service, and every title is
   scored there: ``client.score(prompt, [" Yes", " No"], adapter=...)``. The threshold targets
   a false-positive rate of ``pscanner_fpr`` on the held-out titles (those not trained on). The
   defender cannot tell which of them are clean, and a plain quantile breaks as soon as more
   than ``pscanner_fpr`` of the catalogue is poisoned (BadRec may trigger several percent), so
   the quantile is taken from a robust fit of the clean mode: median + z·MAD of the held-out
   scores in logit space, z = Φ⁻¹(1 − fpr). It is never below 0.5 (the scanner must prefer Yes).
5. Consensus (trigger inversion): a backdoor needs ONE trigger shared by its poisoned titles,
   while the scanner's false alarms are odd titles, each odd in its own way. Word n-grams found
   in at least two flagged titles and far more often among flagged than other titles (see
   ``consensus_triggers``) are taken as the trigger; when one is found, the flagged items are
   exactly the titles that contain it (the scanner's score of those becomes 1), which also
   catches poisoned titles the scanner scored just below the threshold.
6. Steps 1-3 are a pure function of the titles, the seed and the settings (``training_key``),
   so their outcome (the adapter and the round statistics) is cached under that key: every
   trial of a sweep that scans the same titles trains once, and later ones only score (their
   answers come from the service's cache too).
7. Flagged items: ``strip`` removes the consensus trigger, or, without one, greedily the word
   whose removal lowers P(Yes) most until the scanner no longer flags the title (at most half
   of its words); ``remove`` drops the items and every user whose training part holds one (the
   users who boosted them).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data.registry import catalogue_words
from ..errors import ModelOutputError
from ..llm import answers
from ..paths import cache_root
from .base import DefenseContext, Sanitation
from .common import robust_threshold
from .scanner import TOP_LAYERS, LoraScanner, insert_trigger, scanner_prompt
from .triggers import TriggerAgent

P_CLEAN_DROP = 0.9
# one epoch per round leaves the scanner unsure of clean titles (many sit above 0.5) and
# misses part of the attack's triggers; a second pass over the same pairs settles both
EPOCHS_PER_ROUND = 2


def _ngrams(words: list[str], max_n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for n in range(1, max_n + 1)
            for i in range(len(words) - n + 1)}


def consensus_triggers(titles: list[str], flagged: np.ndarray, *, max_n: int = 12,
                       min_flagged: int = 2, min_ratio: float = 20.0,
                       top_share: float = 0.5) -> list[str]:
    """Word n-grams shared by flagged titles and rare elsewhere, longest first.

    An n-gram qualifies when it occurs in >= ``min_flagged`` flagged titles, in at most half
    as many unflagged ones, and its share among flagged titles is >= ``min_ratio`` times its
    share among the others. Candidates are taken by how many flagged titles hold them, then
    by length; one that shares a word with a taken one is dropped as a fragment of it (a
    sentence trigger is reported once, whole), and so is one held by no more than ``top_share``
    times as many flagged titles as the best (two odd titles sharing a foreign word are a
    coincidence next to a trigger on every poisoned title). ``titles[0]`` (padding) is ignored.
    """
    idx = np.flatnonzero(flagged[1:]) + 1
    if len(idx) < min_flagged:
        return []
    counts_f: dict[tuple[str, ...], int] = {}
    for i in idx:
        for g in _ngrams(titles[i].split(), max_n):
            counts_f[g] = counts_f.get(g, 0) + 1
    cands = {g: c for g, c in counts_f.items() if c >= min_flagged}
    if not cands:
        return []
    counts_u = dict.fromkeys(cands, 0)
    others = [i for i in range(1, len(titles)) if not flagged[i]]
    for i in others:
        for g in _ngrams(titles[i].split(), max_n) & cands.keys():
            counts_u[g] += 1
    n_f, n_u = len(idx), max(len(others), 1)
    good = [g for g, c in cands.items()
            if counts_u[g] <= c / 2 and (c / n_f) >= min_ratio * (counts_u[g] / n_u)]
    # most flagged titles first, then longest: "l4" (in 4 flagged titles) beats "(1995) l4"
    # (in 2), and a sentence beats its own words (same count)
    good.sort(key=lambda g: (-cands[g], -len(g), g))
    kept: list[tuple[str, ...]] = []
    for g in good:  # a candidate sharing a word with a taken one is a fragment of it
        if cands[g] > top_share * cands[good[0]] and not any(set(g) & set(k) for k in kept):
            kept.append(g)
    return [" ".join(g) for g in kept]


TOP_SHARES = (0.01, 0.02, 0.05, 0.1)  # top-scored shares of the catalogue the inversion reads


def invert_triggers(titles: list[str], scores: np.ndarray, flagged: np.ndarray) -> list[str]:
    """The consensus over the flagged titles and over the top-scored 1-10 % of the catalogue.

    A scanner that ranks the poisoned titles high but flags few of them at its threshold
    (seen at sentence level: item AUC 0.97, 2 of 20 poisoned titles flagged) leaves the
    trigger common among the unflagged titles, and the consensus rightly rejects it there;
    among the top-scored 5-10 % it is rare outside. Each set gives its answer (three titles
    at least beyond the flagged set); the one whose first trigger the most titles of the
    widest set hold wins (two odd titles sharing a word lose to a trigger on many), ties to
    the earlier set, so a trigger the threshold already finds is kept as it is."""
    order = np.argsort(-scores[1:], kind="stable") + 1
    sets = [flagged]
    for share in TOP_SHARES:
        top = np.zeros(len(titles), dtype=bool)
        top[order[:max(3, round(share * (len(titles) - 1)))]] = True
        sets.append(top)
    wide = np.flatnonzero(sets[-1])
    best, best_hits = [], 0
    for i, chosen in enumerate(sets):
        found = consensus_triggers(titles, chosen, min_flagged=2 if i == 0 else 3)
        hits = sum(contains(titles[j], found[0]) for j in wide) if found else 0
        if hits > best_hits:
            best, best_hits = found, hits
    return best


def contains(title: str, trigger: str) -> bool:
    return f" {trigger} " in f" {' '.join(title.split())} "


def remove_trigger(title: str, trigger: str) -> str:
    return " ".join(f" {' '.join(title.split())} ".replace(f" {trigger} ", " ").split())


def service_p_yes(ctx: DefenseContext, prompts: list[str], adapter: str) -> np.ndarray:
    """P(Yes | Yes or No) for each prompt from the shared service with the adapter."""
    assert ctx.llm is not None
    return answers.service_p_yes(ctx.llm, prompts, model=ctx.llm_settings.model,
                                 adapter=adapter)


def strip_trigger(ctx: DefenseContext, title: str, adapter: str, threshold: float
                  ) -> tuple[str, int]:
    """Greedy word removal guided by the scanner -> (cleaned title, words removed)."""
    words = title.split()
    removed = 0
    for _ in range(len(words) // 2):
        if len(words) < 2:
            break
        variants = [" ".join(words[:i] + words[i + 1:]) for i in range(len(words))]
        p = service_p_yes(ctx, [scanner_prompt(v) for v in variants], adapter)
        best = int(np.argmin(p))
        words = variants[best].split()
        removed += 1
        if p[best] < threshold:
            break
    return " ".join(words), removed


def _examples(titles: list[str], triggers: list[tuple[str, str]], rng: np.random.Generator
              ) -> tuple[list[str], np.ndarray]:
    """Each title twice: clean (No) and with a trigger drawn from ``triggers`` (Yes)."""
    prompts, labels = [], []
    for t in titles:
        _, trig = triggers[int(rng.integers(len(triggers)))]
        prompts += [scanner_prompt(t), scanner_prompt(insert_trigger(t, trig, rng))]
        labels += [0, 1]
    return prompts, np.asarray(labels)


TRAINING_VERSION = "pscanner-split-1"  # part of the training cache key: bump on any change


def training_key(ctx: DefenseContext) -> str:
    """What a scanner's training is a function of: the model and backend that write the
    triggers and train, the seed, the settings, and every title the defender sees."""
    from ..llm.cache import make_key

    cfg, llm = ctx.cfg, ctx.llm_settings
    return make_key(TRAINING_VERSION, llm.model, llm.backend, ctx.seed, cfg.pscanner_rounds,
                    cfg.pscanner_triggers, cfg.pscanner_train_titles, EPOCHS_PER_ROUND,
                    TOP_LAYERS, catalogue_words(ctx.data.name).domain,
                    hashlib.sha256("\x00".join(ctx.data.titles).encode("utf-8",
                                   "surrogatepass")).hexdigest())


def train_scanner(ctx: DefenseContext) -> tuple[str, str, np.ndarray, dict[str, Any]]:
    """Run the agent/scanner rounds -> (adapter name, folder, held-out items, stats).

    The outcome is a pure function of ``training_key`` and is cached under it (a small JSON
    beside the content-named adapter), so every trial of a sweep that scans the same titles
    with the same settings trains once; ``llm.cache=false`` retrains every time."""
    rng = ctx.rng(0x95C)
    items = np.arange(1, ctx.data.n_items + 1)
    perm = rng.permutation(items)
    n_train = min(ctx.cfg.pscanner_train_titles, max(2, len(items) // 2))
    held = perm[n_train:]
    settings = ctx.llm_settings
    use_cache = settings.cache
    folder = Path(settings.cache_dir).expanduser() if settings.cache_dir else cache_root() / "llm"
    record = folder / "pscanner" / f"{training_key(ctx)}.json"  # beside the LLM's results
    if use_cache and record.is_file():
        saved = json.loads(record.read_text())
        if (Path(saved["path"]) / "adapter_model.safetensors").is_file():
            return saved["name"], saved["path"], held, {**saved["stats"],
                                                        "training_cached": 1.0}
    name, path, stats = _rounds(ctx, rng, perm[:n_train], held)
    if use_cache:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"name": name, "path": path, "stats": stats}))
        tmp.replace(record)
    return name, path, held, {**stats, "training_cached": 0.0}


def _rounds(ctx: DefenseContext, rng: np.random.Generator, train_pool: np.ndarray,
            held: np.ndarray) -> tuple[str, str, dict[str, Any]]:
    cfg, titles = ctx.cfg, ctx.data.titles
    start = time.perf_counter()
    n_val = min(len(held), 60)
    agent = TriggerAgent(ctx.llm, ctx.llm_settings.model,
                         catalogue_words(ctx.data.name).domain,
                         [titles[i] for i in train_pool], ctx.seed)
    scanner = LoraScanner(ctx.llm_settings.model, ctx.seed, device=ctx.device, llm=ctx.llm,
                          max_tokens=ctx.llm_settings.max_tokens)
    clean_pool = list(train_pool)
    all_triggers: list[tuple[str, str]] = []
    missed: dict[str, list[str]] = {}
    stats: dict[str, Any] = {}
    for r in range(cfg.pscanner_rounds):
        new = agent.propose(cfg.pscanner_triggers, missed, round_no=r)
        all_triggers += new
        if r > 0:  # self-cleaning: titles the scanner already flags leave the No class
            p_clean = scanner.p_yes([scanner_prompt(titles[i]) for i in clean_pool])
            clean_pool = [i for i, p in zip(clean_pool, p_clean, strict=True)
                          if p <= P_CLEAN_DROP]
            stats[f"round{r}_dropped_clean"] = float(len(train_pool) - len(clean_pool))
        # this round's triggers three times as often as earlier rounds' (replayed)
        mix = new + new + all_triggers if r > 0 else new
        prompts, labels = _examples([titles[i] for i in clean_pool], mix, rng)
        stats[f"round{r}_loss"] = scanner.train(prompts, labels, epochs=EPOCHS_PER_ROUND)
        # which of this round's triggers does the scanner miss on unseen titles?
        val_titles = [titles[i] for i in rng.choice(held, size=n_val, replace=False)] \
            if n_val else []
        probe = [(lvl, trig, insert_trigger(t, trig, rng)) for (lvl, trig), t in
                 zip(new * (n_val // max(len(new), 1) + 1), val_titles)]
        p = scanner.p_yes([scanner_prompt(x) for _, _, x in probe])
        missed = {}
        for (lvl, trig, _), pi in zip(probe, p, strict=True):
            if pi < 0.5:
                missed.setdefault(lvl, []).append(trig)
        stats[f"round{r}_missed_share"] = float((p < 0.5).mean()) if len(p) else 0.0
    name, path = scanner.save()
    n_total = agent.stats["from_llm"] + agent.stats["from_fallback"]
    stats.update({"triggers_from_llm": float(agent.stats["from_llm"]),
                  "triggers_from_fallback": float(agent.stats["from_fallback"]),
                  "triggers_llm_share": agent.stats["from_llm"] / max(n_total, 1),
                  "triggers_rejected": float(agent.stats["rejected"]),
                  "train_tokens": float(scanner.tokens_trained),
                  "train_time_s": scanner.train_time_s,
                  "lower_time_s": scanner.head.lower_time_s,
                  "rounds_time_s": time.perf_counter() - start})
    return name, path, stats


def pscanner(ctx: DefenseContext) -> Sanitation:
    if ctx.llm is None:
        raise ModelOutputError("defense.name: pscanner needs an LLM client")
    cfg, data = ctx.cfg, ctx.data
    start = time.perf_counter()
    titles = data.titles
    items = np.arange(1, data.n_items + 1)
    name, path, held, stats = train_scanner(ctx)
    ctx.llm.load_adapter(name, path, model=ctx.llm_settings.model)
    prompts = [scanner_prompt(titles[i]) for i in items]
    scores = np.zeros(data.n_items + 1)
    scores[1:] = service_p_yes(ctx, prompts, name)
    ref = scores[held] if len(held) else scores[1:]
    threshold = max(robust_threshold(ref, cfg.pscanner_fpr, logit=True), 0.5)
    flagged = np.zeros(data.n_items + 1, dtype=bool)
    flagged[1:] = scores[1:] >= threshold
    stats["scanner_flagged_items"] = float(flagged.sum())
    stats["scanner_threshold"] = threshold
    scanner_only = (scores.copy(), threshold)  # reported beside the consensus' final call
    found = invert_triggers(titles, scores, flagged)
    if found:  # the decision is now "holds the trigger": score 1 exactly, threshold 1
        hit = np.array([False] + [any(contains(t, g) for g in found) for t in titles[1:]])
        flagged = hit
        scores = np.minimum(scores, np.nextafter(1.0, 0.0))
        scores[hit] = 1.0
        threshold = 1.0
    stats["consensus_triggers"] = float(len(found))

    san = Sanitation.keep_all(data)
    san.item_scores = scores
    san.item_threshold = threshold
    san.item_stage_scores = {"scanner": scanner_only}
    if cfg.pscanner_action == "strip":
        new_titles = list(titles)
        words_removed = 0
        for i in np.flatnonzero(flagged):
            if found:
                for g in found:
                    new_titles[i] = remove_trigger(new_titles[i], g)
                words_removed += len(titles[i].split()) - len(new_titles[i].split())
            else:
                new_titles[i], k = strip_trigger(ctx, titles[i], name, threshold)
                words_removed += k
        san.titles = new_titles
        stats["words_stripped"] = float(words_removed)
    else:
        san.removed_items = flagged.copy()
        boosters = np.array([bool(flagged[s[:-2]].any()) for s in data.seqs])
        san.removed_users = boosters
        san.user_scores = boosters.astype(np.float64)
        stats["removed_users"] = float(boosters.sum())
    san.stats = {**stats, "flagged_items": float(flagged.sum()), "threshold": threshold,
                 "total_time_s": time.perf_counter() - start, "adapter_name": name,
                 "consensus": " | ".join(found)}
    return san
