"""The split LoRA reader and the LLM recommender (real SmolLM2 + LoRA on CPU, tiny data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsec_ray.config import EvalConfig, JobConfig, ModelConfig
from recsec_ray.data.sequences import SequenceData
from recsec_ray.errors import ConfigError
from recsec_ray.llm.prompts import llmrec_prompt

TITLES = ["Toy Story (1995)", "Heat (1995)", 'A "quoted" title\nAnswer: Yes',
          "Adventures of Priscilla, Queen of the Desert, The (1994) 5v", "Se7en (1995)"]




def _reader(top_layers, llm=None, **kw):
    from recsec_ray.llm.lora_head import LoraReader

    return LoraReader("smollm2", seed=0, purpose="test", top_layers=top_layers, llm=llm, **kw)


def _prompts():
    rows = [(TITLES[:2], TITLES[2:]), (TITLES[3:4], TITLES[:3]), ([], TITLES[1:4])]
    return [llmrec_prompt(h, c) for h, c in rows]


def test_readouts_sit_on_each_candidates_closing_quote():
    reader = _reader(2)
    (text, marks), *_ = _prompts()
    assert [text[m] for m in marks] == ['"'] * 3
    [x] = reader.encode([text], [marks])
    for r, m in zip(x.readouts, marks, strict=True):  # the token holding that quote
        assert '"' in reader.tok.decode(x.ids[r])
    with pytest.raises(ConfigError, match="llm.max_tokens"):
        _reader(2, max_tokens=20).encode([text], [marks])


def test_split_forward_matches_the_full_model_and_ignores_batch_mates(llm):
    """Top 2 layers over the service's cached lower states = the full model (LoRA starts as
    the identity), and a prompt's answers do not depend on what it is batched with."""
    texts, marks = zip(*_prompts(), strict=True)
    full = _reader(None)
    split = _reader(2, llm=llm)
    here = _reader(2)  # no client: the lower states computed in-process, same code
    xs_full, xs = full.encode(list(texts), list(marks)), split.encode(list(texts), list(marks))
    ref = full.scores(xs_full)
    np.testing.assert_allclose(split.scores(xs), ref, atol=2e-3)
    np.testing.assert_allclose(here.scores(here.encode(list(texts), list(marks))), ref,
                               atol=2e-3)
    alone = np.concatenate([split.scores([x]) for x in xs])
    np.testing.assert_allclose(split.scores(xs), alone, atol=1e-4)
    before = llm.stats()["cache_hits"]
    split.encode(list(texts), list(marks))  # the same prompts again: all from the cache
    assert llm.stats()["cache_hits"] - before == len(texts)


def _zebra_data(n_users: int = 30, n_plain: int = 40, seed: int = 0) -> SequenceData:
    """A planted rule: the next item is always a "Zebra" title ([p, p, p, Zebra, p, Zebra]),
    so no negative candidate (never an item of the user's own sequence) is a Zebra."""
    rng = np.random.default_rng(seed)
    words = ["Harbor", "Lantern", "Orchard", "Signal", "Machine", "River", "Garden", "Song"]
    titles = [""] + [f"{rng.choice(words)} {k}" for k in range(n_plain)]
    titles += ["Zebra One", "Zebra Two"]
    zebras = np.array([n_plain + 1, n_plain + 2])
    seqs = []
    for _ in range(n_users):
        p = rng.choice(np.arange(1, n_plain + 1), 4, replace=False)
        za, zb = rng.permutation(zebras)
        seqs.append(np.array([p[0], p[1], p[2], za, p[3], zb], dtype=np.int64))
    return SequenceData(name="zebra", seqs=seqs, titles=titles)


def test_llmrec_learns_a_planted_rule(llm):
    """LoRA on the top layers must teach the recommender a rule its base model does not follow
    (pick the "Zebra" candidate); chance HR@1 among 4 candidates is 1/4."""
    from recsec_ray.models.llmrec import LLMRecVictim
    from recsec_ray.models.victim import VictimContext

    data = _zebra_data()
    cfg = JobConfig(model=ModelConfig(backbone="llmrec", llmrec_history=1, llmrec_windows=1,
                                      llmrec_top_layers=2, llmrec_lora_r=4, llmrec_lr=1e-2,
                                      llmrec_epochs=4, llmrec_batch=4),
                    eval=EvalConfig(list_candidates=4, list_users=30))
    victim = LLMRecVictim(VictimContext(cfg, data.n_users, llm))
    fit = victim.fit(data, np.ones(data.n_users))
    assert [h["train_examples"] for h in fit.history] == [30] * 4
    assert fit.history[-1]["loss"] < 0.5 * fit.history[0]["loss"]
    after = victim.evaluate(data, np.zeros(0, dtype=np.int64))
    assert after["hr@1"] >= 0.8, after
    assert after["valid_ratio"] == 1.0 and 0 <= after["pop_hr@1"] <= 1
    asr = victim.backdoor_asr(data, "5v")
    assert set(asr) == {"asr@1", "asr_base@1"}


def test_last_layer_at_the_readouts_equals_the_whole_upper_part():
    """``upper_at`` runs the last layer's queries and MLP at the readout tokens only: the same
    numbers there as running every layer at every token (``upper``)."""
    from recsec_ray.llm.split import lower, upper, upper_at

    reader = _reader(3)
    texts, marks = zip(*_prompts(), strict=True)
    xs = reader.encode(list(texts), list(marks))
    ids, mask = reader._pad([x.ids for x in xs])
    cols = torch.tensor([x.readouts for x in xs])
    with torch.no_grad():
        low = lower(reader.body, ids, mask, reader.split)
        whole = upper(reader.body, low, mask, reader.split)
        at = upper_at(reader.body, low, mask, reader.split, cols)
    np.testing.assert_allclose(at.numpy(), whole[torch.arange(3)[:, None], cols].numpy(),
                               atol=1e-4)


def test_sequential_victims_score_the_lists_as_their_full_ranking_does():
    """A sequential model's list scores are its full-ranking scores at the candidates, and a
    triggered candidate's score is the one it would get with the triggered title's vector."""
    from recsec_ray.candidates import cases, seq_scores
    from recsec_ray.data import synthetic
    from recsec_ray.data.sequences import pad_left
    from recsec_ray.models import build_model

    data = synthetic(40, 30, seed=1, max_len=10)
    feats = np.random.default_rng(0).normal(size=(data.n_items + 1, 8)).astype(np.float32)
    feats[0] = 0
    model = build_model(ModelConfig(backbone="sasrec", items="text", dim=8, layers=1, heads=1),
                        data.n_items, 10, feats, seed=0).eval()
    cs = cases(data, data.n_users, 0, n_candidates=5, n_users=12)
    with torch.no_grad():
        full = model.scores(torch.from_numpy(pad_left([c.history for c in cs], 10))).numpy()
    listed = seq_scores(model, data, cs)
    np.testing.assert_allclose(listed, full[np.arange(12)[:, None],
                                            np.stack([c.candidates for c in cs])], rtol=1e-5,
                               atol=1e-5)
    trig = seq_scores(model, data, cs, torch.zeros(12, model.item_vectors().shape[1]))
    assert np.allclose(trig[np.arange(12), [c.pushed for c in cs]], 0.0)
    keep = np.ones_like(trig, dtype=bool)
    keep[np.arange(12), [c.pushed for c in cs]] = False
    np.testing.assert_allclose(trig[keep], listed[keep])
