"""Attacks on small synthetic data: budgets, ground truth, determinism, validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from recsec_ray.attacks import ATTACKS, AttackContext, choose_targets, get_attack
from recsec_ray.attacks.badrec import default_trigger
from recsec_ray.attacks.llm import place_targets
from recsec_ray.config import AttackConfig, JobConfig, ModelConfig
from recsec_ray.data import synthetic
from recsec_ray.data.triggers import triggered_titles
from recsec_ray.errors import ConfigError, ModelOutputError
from recsec_ray.metrics import pushed_items

SMALL_MODEL = ModelConfig(dim=16, heads=1, layers=1, epochs=3, batch_size=64, dropout=0.1)


@pytest.fixture(scope="module")
def data():
    return synthetic(120, 80, seed=3, max_len=20)


def run(data, name, seed=0, **kw):
    # an 80-item catalogue; each fake carries every target unless a test says otherwise
    cfg = AttackConfig(name=name, **{"n_targets": 5, "targets_per_user": 0, **kw})
    targets = choose_targets(data, cfg, seed)
    ctx = AttackContext(data=data, targets=targets, cfg=cfg, model_cfg=SMALL_MODEL, seed=seed)
    return ATTACKS[name](ctx)


# ---- targets ---------------------------------------------------------------------------------
def test_targets_from_less_popular_half_seeded(data):
    cfg = AttackConfig(n_targets=5)
    t = choose_targets(data, cfg, 0)
    counts = data.item_counts("train")
    seen = np.flatnonzero(counts[1:] > 0) + 1
    median = np.sort(counts[seen])[(len(seen) + 1) // 2 - 1]
    assert len(set(t)) == 5 and (counts[t] <= median).all() and (counts[t] > 0).all()
    assert np.array_equal(t, choose_targets(data, cfg, 0))
    assert not np.array_equal(t, choose_targets(data, cfg, 1))


def test_explicit_targets_validated(data):
    assert list(choose_targets(data, AttackConfig(targets=(3, 7)), 0)) == [3, 7]
    with pytest.raises(ConfigError, match="attack.targets"):
        choose_targets(data, AttackConfig(targets=(0, 5)), 0)
    with pytest.raises(ConfigError, match="attack.targets"):
        choose_targets(data, AttackConfig(targets=(data.n_items + 1,)), 0)


def test_more_targets_than_items_fails(data):
    with pytest.raises(ConfigError, match="attack.n_targets"):
        choose_targets(data, AttackConfig(n_targets=data.n_items + 1), 0)
    with pytest.raises(ConfigError, match="attack.n_targets"):  # more than the unpopular half
        choose_targets(data, AttackConfig(n_targets=data.n_items - 5), 0)


@pytest.mark.parametrize("field,value", [("poison_rate", -0.01), ("poison_rate", 1.5),
                                         ("name", "sybil"), ("trigger", "  "),
                                         ("badrec_fraction", -0.01)])
def test_invalid_attack_config_names_field(field, value):
    with pytest.raises(ConfigError, match=f"attack.{field}"):
        AttackConfig(**{field: value})
    with pytest.raises(ConfigError, match=f"attack.{field}"):
        JobConfig.from_dict({f"attack.{field}": value})


def test_unknown_attack_in_registry_lookup():
    with pytest.raises(ConfigError, match="attack.name"):
        get_attack("sybil")
    assert set(ATTACKS) == {"none", "random", "bandwagon", "dp", "llm", "badrec"}


def test_empty_trigger_rejected_by_helper():
    with pytest.raises(ConfigError, match="attack.trigger"):
        triggered_titles(["", "a"], " ")


# ---- random / bandwagon ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["random", "bandwagon"])
def test_budget_ground_truth_and_targets(data, name):
    p = run(data, name, poison_rate=0.1)
    assert p.n_real == data.n_users and p.n_fake == round(0.1 * data.n_users)
    assert all(np.array_equal(a, b) for a, b in zip(p.data.seqs[:p.n_real], data.seqs))
    assert p.is_fake.sum() == p.n_fake and not p.is_fake[:p.n_real].any()
    assert p.data.titles == data.titles and not p.poisoned_items.any()
    lengths = {len(s) for s in data.seqs}
    for s in p.data.seqs[p.n_real:]:
        assert set(p.targets) <= set(s[:-2].tolist())  # targets sit where the trainer learns
        assert ((s >= 1) & (s <= data.n_items)).all()
        assert min(lengths) <= len(s) <= max(lengths)


def test_zero_rate_adds_nobody(data):
    assert run(data, "random", poison_rate=0.0).n_fake == 0


def _top(data, targets, k):
    counts = data.item_counts("train")
    counts[0] = -1
    counts[targets] = -1
    return set(np.argsort(-counts, kind="stable")[:k].tolist())


def _body_fillers(p):
    return [int(i) for s in p.data.seqs[p.n_real:] for i in s[:-2] if i not in p.targets]


def test_bandwagon_mixes_popular_and_random_fillers(data):
    pure = run(data, "bandwagon", poison_rate=0.2, filler_pool=20, popular_share=1.0)
    assert set(_body_fillers(pure)) <= _top(data, pure.targets, 20)
    p = run(data, "bandwagon", poison_rate=0.2, filler_pool=15, popular_share=0.5)
    top = _top(data, p.targets, 15)
    for s in p.data.seqs[p.n_real:]:
        body = [int(i) for i in s[:-2] if i not in p.targets]
        assert sum(i in top for i in body) == round(0.5 * len(body))  # the rest: random
        assert len(set(s.tolist())) == len(s)
        assert not set(s[-2:].tolist()) & top  # the held-out pair: from the random part
    spill = run(data, "bandwagon", poison_rate=0.2, filler_pool=5, popular_share=1.0)
    top = _top(data, spill.targets, 5)
    for s in spill.data.seqs[spill.n_real:]:  # the 5 popular items, then random, no repeats
        body = [int(i) for i in s[:-2] if i not in spill.targets]
        assert sum(i in top for i in body) == min(len(body), 5) and len(set(s.tolist())) == len(s)


@pytest.mark.parametrize("name", ["random", "bandwagon", "badrec"])
def test_deterministic(data, name):
    a, b = run(data, name, seed=4), run(data, name, seed=4)
    c = run(data, name, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a.data.seqs, b.data.seqs))
    assert a.data.titles == b.data.titles
    fa, fc = a.data.seqs[a.n_real:], c.data.seqs[c.n_real:]
    assert len(fa) != len(fc) or any(not np.array_equal(x, y) for x, y in zip(fa, fc))


def test_none_keeps_data_and_targets(data):
    p = run(data, "none")
    assert p.data is data and p.n_fake == 0 and len(p.targets) == 5


# ---- BadRec ----------------------------------------------------------------------------------
@pytest.mark.parametrize("level", ["char", "word", "sentence"])
def test_badrec_triggers_titles_and_budget(level):
    d = synthetic(300, 80, seed=1, max_len=30)
    p = run(d, "badrec", trigger_level=level, badrec_fraction=0.01, badrec_items=20)
    trig = p.trigger
    assert trig and trig == default_trigger(level, 0, d.titles)
    assert p.poisoned_items.sum() == 20 and p.poisoned_items[p.targets].all()
    counts = d.item_counts("train")
    assert counts[p.poisoned_items].mean() < counts[1:].mean()  # unpopular items
    for i in range(1, d.n_items + 1):
        want = f"{d.titles[i]} {trig}" if p.poisoned_items[i] else d.titles[i]
        assert p.data.titles[i] == want
    # default unit: triggered labels / every training example (next-item labels), fakes included
    fakes = p.data.seqs[p.n_real:]
    examples = sum(len(s) - 3 for s in d.seqs) + sum(len(s) - 3 for s in fakes)
    assert 0.01 <= len(fakes) / examples < 0.01 + 1 / examples
    assert p.stats["badrec_example_share"] == len(fakes) / examples
    by_interactions = run(d, "badrec", trigger_level=level, badrec_fraction=0.01,
                          badrec_items=20, badrec_unit="interactions")
    real = sum(len(s) - 2 for s in d.seqs)
    fake = sum(len(s) - 2 for s in by_interactions.data.seqs[by_interactions.n_real:])
    assert 0.008 <= fake / real <= 0.014, fake / real
    assert by_interactions.n_fake < p.n_fake / 5  # the paper's unit poisons ~10x more labels
    for s in fakes:  # clean history, one triggered item, 2 held-out clean
        assert p.poisoned_items[s[-3]] and not p.poisoned_items[np.delete(s, -3)].any()
    for unit in ("examples", "interactions"):  # 0: the control, triggered titles and no fake
        control = run(d, "badrec", trigger_level=level, badrec_fraction=0.0, badrec_items=20,
                      badrec_unit=unit)
        assert control.n_fake == 0 and control.data.titles == p.data.titles
        assert control.trigger == trig
    only_targets = run(d, "badrec", trigger_level=level)
    assert np.array_equal(np.flatnonzero(only_targets.poisoned_items), only_targets.targets)
    if level == "char":
        assert len(trig) == 2 and any(c.isdigit() for c in trig)


def test_badrec_explicit_trigger_and_levels_differ(data):
    p = run(data, "badrec", trigger="cf")
    assert p.trigger == "cf"
    triggers = {default_trigger(level, 0, data.titles) for level in ("char", "word", "sentence")}
    assert len(triggers) == 3


def test_triggered_titles_and_pushed_items(data):
    t = triggered_titles(data.titles, "5v")
    assert t[0] == "" and all(t[i] == data.titles[i] + " 5v" for i in range(1, len(t)))
    users = np.arange(50)
    exclude = np.array([1, 2, 3])
    pushed = pushed_items(data, users, seed=0, exclude=exclude)
    assert np.array_equal(pushed, pushed_items(data, users, seed=0, exclude=exclude))
    for u, item in zip(users, pushed):
        assert item not in data.seqs[u] and item not in exclude and 1 <= item <= data.n_items


# ---- LLM attack: parsing and validation of hostile output --------------------------------------
class ScriptedLLM:
    """Test double for the LLMClient protocol: ``score`` answers from a fixed rule.

    It stands in only for the model's scores, to drive the attack's calibration and its
    handling of unusable answers; ``prefer`` maps a prompt and its option titles to the
    log-probabilities returned (non-finite rows mimic a broken answer)."""

    def __init__(self, prefer):
        self.prefer, self.prompts, self.calls = prefer, [], 0

    def score(self, prompts, choices, *, model=None, adapter=None):
        self.prompts += prompts
        self.calls += 1
        return np.array([self.prefer(p, len(choices)) for p in prompts], dtype=np.float64)

    def stats(self):
        return {"calls": self.calls}


def _options(prompt: str) -> list[str]:
    return [line.split(". ", 1)[1] for line in prompt.split("Options:\n")[1].split("\n")
            if len(line) > 1 and line[1] == "."]


def test_calibrated_choice_removes_the_letter_prior():
    from recsec_ray.attacks.llm import calibrated_choice

    # every row prefers " A" by 5 nats: raw argmax always picks A; beyond the prior, the row's
    # own preference (B in row 0, C in row 1) decides
    logp = np.array([[-1.0, -5.5, -7.0], [-1.0, -7.0, -5.5], [-1.0, -6.5, -6.5]])
    assert list(logp.argmax(1)) == [0, 0, 0]
    assert list(calibrated_choice(logp)) == [1, 2, 0]
    bad = np.array([[np.nan, 0.0, 0.0], [0.0, -1.0, -2.0]])
    assert calibrated_choice(bad)[0] == -1


def test_place_targets_keeps_llm_order_and_trains_targets():
    rng = np.random.default_rng(0)
    seq = place_targets([5, 6, 7, 8, 10, 11], np.array([9, 3]), rng)
    assert list(seq[-2:]) == [10, 11] and {9, 3} <= set(seq[:-2].tolist())
    assert [i for i in seq if i not in (9, 3)] == [5, 6, 7, 8, 10, 11]


def test_llm_attack_follows_the_llm_and_counts_unusable_answers(data):
    """Fake users hold the items the LLM scores highest (here: years ending in 3), every
    target inside the training part, no repeats; a non-finite answer is random fill, counted."""
    def prefer(prompt, n):
        opts = _options(prompt)
        if "teenager" in prompt:
            return [np.nan] * n
        return [0.0 if o.rstrip('"').endswith("3)") else -9.0 for o in opts]

    llm = ScriptedLLM(prefer)
    cfg = AttackConfig(name="llm", poison_rate=0.1, n_targets=5, targets_per_user=2)
    targets = choose_targets(data, cfg, 0)
    p = ATTACKS["llm"](AttackContext(data=data, targets=targets, cfg=cfg, model_cfg=SMALL_MODEL,
                                     seed=0, llm=llm))
    n = round(0.1 * data.n_users)
    assert p.n_fake == n and llm.calls == p.stats["llm_choice_steps"]
    liked = {i for i in range(1, data.n_items + 1) if data.titles[i].endswith("3)")}
    chosen = [np.setdiff1d(s, targets) for s in p.data.seqs[p.n_real:]]
    share_liked = np.mean([np.isin(c, list(liked)).mean() for c in chosen])
    assert share_liked > 0.5 > len(liked) / data.n_items, share_liked
    assert p.stats["llm_fallbacks"] == sum("teenager" in q for q in llm.prompts)
    total = p.stats["llm_fallbacks"] / (1 - p.stats["llm_chosen_share"])
    assert total == pytest.approx(sum(len(c) for c in chosen))
    for s, slots in zip(p.data.seqs[p.n_real:], range(n), strict=True):
        assert ((s >= 1) & (s <= data.n_items)).all() and len(set(s.tolist())) == len(s)
        assert len(np.intersect1d(s[:-2], targets)) == 2, slots
    # untrusted titles are quoted in the prompt
    assert '"' + _options(llm.prompts[0])[0].strip('"') + '"' in llm.prompts[0]


def test_llm_attack_needs_a_client(data):
    with pytest.raises(ConfigError, match="attack.name"):
        run(data, "llm")


# ---- DP --------------------------------------------------------------------------------------
def _target_hits(poisoned, k=10, seed=0) -> float:
    """Share of (real user, target) pairs with the target in the user's top-k (history
    masked) after training a victim on the poisoned data."""
    import torch

    from recsec_ray.data.sequences import pad_left
    from recsec_ray.models import build_model
    from recsec_ray.models.trainer import train

    d = poisoned.data
    cfg = dataclasses.replace(SMALL_MODEL, epochs=15, patience=15)
    model = build_model(cfg, d.n_items, 20, seed=seed)
    train(model, d, cfg, n_real=poisoned.n_real, seed=seed, progress=False)
    with torch.no_grad():
        seqs = torch.as_tensor(pad_left([d.seqs[u][:-1] for u in range(poisoned.n_real)], 20))
        s = model.scores(seqs)
        s[:, 0] = float("-inf")
        for u in range(poisoned.n_real):
            s[u, torch.as_tensor(d.seqs[u][:-1])] = float("-inf")
    ranks = (s.unsqueeze(2) > s[:, poisoned.targets].unsqueeze(1)).sum(1) + 1
    return float((ranks <= k).float().mean())


def test_dp_budget_targets_and_determinism():
    data = synthetic(60, 40, seed=3, max_len=12)
    a = run(data, "dp", poison_rate=0.1, dp_batches=2, dp_surrogate_epochs=2)
    assert a.n_fake == round(0.1 * data.n_users)
    for s in a.data.seqs[a.n_real:]:
        assert set(a.targets) <= set(s[:-2].tolist()) and s[0] not in a.targets
        assert ((s >= 1) & (s <= data.n_items)).all()
    b = run(data, "dp", poison_rate=0.1, dp_batches=2, dp_surrogate_epochs=2)
    assert all(np.array_equal(x, y) for x, y in zip(a.data.seqs, b.data.seqs))


@pytest.mark.parametrize("attack", ["random", "bandwagon", "dp"])
def test_every_attack_places_each_target_target_occurrences_times(attack):
    """The same number of target labels per fake user, so attacks compare by strategy."""
    data = synthetic(60, 40, seed=3, max_len=20)
    for occ in (1, 2):
        p = run(data, attack, poison_rate=0.1, n_targets=3, target_occurrences=occ,
                dp_batches=2, dp_surrogate_epochs=2)
        for s in p.data.seqs[p.n_real:]:
            body = s[:-2].tolist()
            assert [body.count(int(t)) for t in p.targets] == [occ] * 3, (attack, occ, body)


@pytest.mark.slow
def test_dp_pushes_targets_harder_than_random():
    d = synthetic(300, 150, seed=2, max_len=20)
    kw = {"poison_rate": 0.05, "n_targets": 3, "dp_batches": 2, "dp_surrogate_epochs": 10}
    hits = {a: _target_hits(run(d, a, **kw)) for a in ("none", "random", "dp")}
    assert hits["dp"] > hits["random"] > hits["none"], hits  # measured 0.38 > 0.20 > 0.04


# ---- the candidate-list protocol and the LLM recommender's examples ---------------------------
def test_candidate_lists_are_seeded_per_user_and_clean(data):
    from recsec_ray.candidates import cases

    banned = np.array([1, 2, 3])
    cs = cases(data, data.n_users, 0, n_candidates=5, n_users=30, exclude=banned)
    assert len(cs) == 30 and len({c.user for c in cs}) == 30
    for c in cs:
        seq = data.seqs[c.user]
        assert c.candidates[c.gold] == seq[-1] and c.pushed != c.gold
        negatives = np.delete(c.candidates, c.gold)
        assert not np.isin(negatives, seq).any() and not np.isin(negatives, banned).any()
        assert len(set(c.candidates.tolist())) == 5 and list(c.history) == list(seq[:-1])
    # the same user's list does not depend on which other users, or which extra banned item
    again = {c.user: c for c in cases(data, data.n_users, 0, n_candidates=5, n_users=30,
                                      exclude=np.array([1, 2, 3, 4]))}
    same = [c for c in cs if 4 not in c.candidates]
    assert same and all(list(again[c.user].candidates) == list(c.candidates) for c in same)
    assert cases(data, data.n_users, 1, n_candidates=5, n_users=30)[0].candidates.tolist() != \
        cs[0].candidates.tolist() or cs[0].user != 0


def test_list_metrics_ties_and_baselines():
    from recsec_ray.candidates import Case, list_asr, list_metrics

    cs = [Case(0, np.array([1]), np.array([4, 5, 6]), gold=g, pushed=p)
          for g, p in ((0, 1), (1, 2), (2, 0), (2, 1))]
    flat = np.zeros((4, 3))  # ties rank the first candidate first: hits only where gold is 0
    counts = np.array([0, 0, 0, 0, 1, 5, 2])
    m = list_metrics(flat, cs, counts)
    assert m["hr@1"] == 0.25 and m["hr@3"] == 1.0
    assert m["pop_hr@1"] == 0.25  # popularity picks item 5 (position 1): case 2's gold
    trig = flat.copy()
    trig[np.arange(4), [c.pushed for c in cs]] = 1.0
    a = list_asr(trig, flat, cs)
    assert a == {"asr@1": 1.0, "asr_base@1": 0.25}
    with pytest.raises(ModelOutputError):
        list_metrics(np.full((4, 3), np.nan), cs)


def _llmrec_cfg(**model):
    from recsec_ray.config import EvalConfig, JobConfig

    return JobConfig(model=ModelConfig(backbone="llmrec", **model),
                     eval=EvalConfig(list_candidates=4, list_users=10))


def test_llmrec_examples_windows_cap_and_clean_negatives(data):
    """Every user's last window first, then earlier ones; the cap cuts the last round by a
    per-user key (adding users displaces few); training-time triggered items never serve as
    negatives under 'clean' and are counted under 'any'."""
    from recsec_ray.models.llmrec import LLMRec, count_examples, windows

    w = np.ones(data.n_users)
    full = sum(windows(len(data.train_seq(u)), 3) for u in range(data.n_users))
    for cap in (data.n_users + 30, 10_000):
        rec = LLMRec.__new__(LLMRec)
        rec.cfg, rec.seed, rec.stats = _llmrec_cfg(llmrec_windows=3, llmrec_examples=cap), 0, {}
        ex = rec.examples(data, w, np.zeros(0, dtype=np.int64))
        lengths = [len(data.train_seq(u)) for u in range(data.n_users)]
        assert len(ex) == count_examples(rec.cfg.model, lengths) == min(cap, full)
        users = [u for u, *_ in ex]
        assert set(users) == set(range(data.n_users))  # every user's last window is in
        for u, hist, cands, gold in ex:
            train = data.train_seq(u)
            assert cands[gold] == train[len(hist)] and list(hist) == list(train[:len(hist)])
            assert not np.isin(np.delete(cands, gold), train).any()
    hot = np.array([int(data.seqs[0][-1]), int(data.seqs[1][-1])])  # not in user 0's training
    rec.cfg = _llmrec_cfg(llmrec_windows=3, llmrec_examples=10_000)  # default: any
    rec.stats = {}
    ex_any = rec.examples(data, w, hot)
    rec.cfg = _llmrec_cfg(llmrec_windows=3, llmrec_examples=10_000, llmrec_negatives="clean")
    ex_clean = rec.examples(data, w, hot)
    assert not any(np.isin(np.delete(c, g), hot).any() for _, _, c, g in ex_clean)
    share = np.mean([np.isin(np.delete(c, g), hot).any() for _, _, c, g in ex_any])
    assert share > 0 and rec.stats["llmrec_triggered_negatives"] == 0.0
    # a zero weight drops the user's examples
    w0 = w.copy()
    w0[:5] = 0
    assert not {u for u, *_ in rec.examples(data, w0, hot)} & set(range(5))


def test_badrec_budget_counts_the_victims_training_examples(data):
    """1 % of the training examples the victim learns from: for the LLM recommender its capped
    windows, for a sequential model every next-item label."""
    from recsec_ray.models import BACKBONES

    for backbone, model in (("sasrec", SMALL_MODEL),
                            ("llmrec", ModelConfig(backbone="llmrec", llmrec_examples=300))):
        cfg = AttackConfig(name="badrec", badrec_fraction=0.05)
        targets = choose_targets(data, cfg, 0)
        p = ATTACKS["badrec"](AttackContext(data=data, targets=targets, cfg=cfg,
                                            model_cfg=model, seed=0))
        lengths = [len(s) - 2 for s in p.data.seqs]
        total = BACKBONES.entry(backbone).count_examples(model, lengths)
        assert p.stats["badrec_example_share"] == pytest.approx(p.n_fake / total)
        assert 0.05 <= p.n_fake / total < 0.05 + 1.5 / total, (backbone, p.n_fake, total)


@pytest.mark.parametrize("name", ["random", "bandwagon", "dp"])
def test_targets_per_user_rotates_so_each_target_is_carried_equally(data, name):
    """Each fake user carries ``targets_per_user`` of the targets; over the fakes every target
    is carried equally often (not a marker the victim can learn from co-occurring targets)."""
    p = run(data, name, poison_rate=0.2, n_targets=6, targets_per_user=2)
    carried = [np.intersect1d(s[:-2], p.targets) for s in p.data.seqs[p.n_real:]]
    assert all(len(c) == 2 for c in carried)
    counts = np.array([sum(t in c for c in carried) for t in p.targets])
    assert counts.max() - counts.min() <= 1 and counts.sum() == 2 * p.n_fake
