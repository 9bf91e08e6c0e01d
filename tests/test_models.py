"""Backbones and trainer on the synthetic generator's data (sequential chains a model can learn)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from recsec_ray.config import EvalConfig, ModelConfig
from recsec_ray.data import synthetic
from recsec_ray.errors import ConfigError
from recsec_ray.metrics import ranking_metrics
from recsec_ray.models import BACKBONES, build_model, sequential_backbones
from recsec_ray.models.hooks import Hook
from recsec_ray.models.trainer import pick_device, train

MAX_LEN = 20
SMALL = ModelConfig(dim=32, layers=1, heads=2, dropout=0.1, epochs=25, patience=5,
                    batch_size=32, lr=5e-3)
EVAL = EvalConfig(ks=(10,), target_ks=())


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data():
    return synthetic(160, 80, seed=3, max_len=MAX_LEN)


@pytest.fixture(scope="module")
def features(data):
    """Stand-in title embeddings: a fixed random matrix (the real ones come from the LLM)."""
    f = np.random.default_rng(1).normal(size=(data.n_items + 1, 32)).astype(np.float32)
    f[0] = 0
    return f


def _fit(data, features=None, *, n_real=None, weights=None, seed=0, **overrides):
    cfg = dataclasses.replace(SMALL, **overrides)
    feats = features if cfg.items == "text" else None
    model = build_model(cfg, data.n_items, MAX_LEN, feats, seed=seed)
    n_real = n_real or data.n_users
    res = train(model, data, cfg, n_real=n_real, user_weights=weights, seed=seed,
                progress=False)
    return res, ranking_metrics(res.model, data, n_real, np.zeros(0, np.int64), EVAL)


@pytest.mark.parametrize("items", ["id", "text"])
@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec", "bert4rec"])
def test_backbone_beats_popularity_and_random(data, features, backbone, items):
    _, pop = _fit(data, backbone="pop")
    slow = {"epochs": 60, "patience": 10} if backbone == "bert4rec" else {}  # cloze learns slower
    res, m = _fit(data, features, backbone=backbone, items=items, **slow)
    assert m["hr@10"] > max(1.5 * pop["hr@10"], 3 * 10 / data.n_items), (m, pop)
    assert res.history[res.best_epoch]["valid_ndcg@10"] == max(
        h["valid_ndcg@10"] for h in res.history)


def test_bce_loss_learns_too(data):
    _, pop = _fit(data, backbone="pop")
    _, m = _fit(data, backbone="sasrec", loss="bce", epochs=30)
    assert m["hr@10"] > 1.5 * pop["hr@10"]


def test_same_seed_same_result_other_seed_differs(data):
    a, ma = _fit(data, backbone="sasrec", epochs=3)
    b, mb = _fit(data, backbone="sasrec", epochs=3)
    c, _ = _fit(data, backbone="sasrec", epochs=3, seed=1)
    assert ma == mb
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert [h["loss"] for h in a.history] != [h["loss"] for h in c.history]


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec", "pop"])
def test_weight_zero_equals_removing_the_user(data, backbone):
    """A fake user with weight 0 leaves training exactly as if it were not in the data."""
    n_real = data.n_users
    fake = [np.arange(1, 31, dtype=np.int64)] * 3  # three identical "bandwagon" users
    poisoned = data.with_users(fake)
    w = np.ones(poisoned.n_users, np.float32)
    w[n_real:] = 0.0
    kw = {"backbone": backbone, "epochs": 3}
    res_w, m_w = _fit(poisoned, n_real=n_real, weights=w, **kw)
    res_c, m_c = _fit(data, n_real=n_real, **kw)
    assert m_w == m_c
    for k, v in res_c.model.state_dict().items():
        torch.testing.assert_close(res_w.model.state_dict()[k], v, rtol=0, atol=0)
    # and a positive weight does change the model (the weights are really used)
    _, m_1 = _fit(poisoned, n_real=n_real, **kw)
    assert m_1 != m_c


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec", "bert4rec"])
def test_left_padding_is_inert_and_never_nan(backbone):
    """Hidden states at real slots do not depend on how much padding precedes them, and rows
    that are all padding still give finite scores (DESIGN §6's TransformerEncoder NaN)."""
    cfg = dataclasses.replace(SMALL, backbone=backbone)
    model = build_model(cfg, 30, 12).eval()
    seq = torch.tensor([5, 9, 2, 17])
    short = torch.cat([torch.zeros(4, dtype=torch.long), seq])[None]  # length 8
    long = torch.cat([torch.zeros(8, dtype=torch.long), seq])[None]  # length 12
    with torch.no_grad():
        torch.testing.assert_close(model.hidden(short)[0, -4:], model.hidden(long)[0, -4:])
        torch.testing.assert_close(model.scores(short), model.scores(long))
        batch = torch.tensor([[0] * 12, [0] * 11 + [3], list(range(1, 13))])
        assert torch.isfinite(model.scores(batch)).all()
        assert torch.isfinite(model.hidden(batch)).all()


def test_text_items_swap_features_changes_scores(features):
    cfg = dataclasses.replace(SMALL, backbone="sasrec", items="text")
    model = build_model(cfg, 80, MAX_LEN, features).eval()
    seqs = torch.tensor([[0] * 17 + [1, 2, 3]])
    with torch.no_grad():
        before = model.scores(seqs)
        edited = features.copy()
        edited[40] += 1.0
        model.set_item_features(edited)
        after = model.scores(seqs)
    assert not torch.equal(before[:, 40], after[:, 40])
    torch.testing.assert_close(before[:, 41:], after[:, 41:])
    with pytest.raises(ConfigError, match="shape"):
        model.set_item_features(features[:10])
    with pytest.raises(ConfigError, match="text"):
        build_model(dataclasses.replace(SMALL, items="text"), 80, MAX_LEN)
    with pytest.raises(ConfigError, match="'text'"):
        build_model(SMALL, 80, MAX_LEN).set_item_features(features)


def test_registry_and_bad_inputs(data):
    assert set(BACKBONES) == {"pop", "sasrec", "gru4rec", "bert4rec", "llmrec"}
    assert sequential_backbones() == ["sasrec", "gru4rec", "bert4rec"]
    with pytest.raises(ConfigError, match="'llmrec' is not a sequential model"):
        build_model(dataclasses.replace(SMALL, backbone="llmrec"), 10, 5)
    model = build_model(SMALL, data.n_items, MAX_LEN)
    with pytest.raises(ConfigError, match="user_weights"):
        train(model, data, SMALL, n_real=data.n_users, user_weights=np.ones(3), seed=0,
              progress=False)
    with pytest.raises(ConfigError, match="user_weights"):
        train(model, data, SMALL, n_real=data.n_users,
              user_weights=np.full(data.n_users, -1.0), seed=0, progress=False)
    assert pick_device("auto") in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="model.device"):
            pick_device("cuda")


def test_late_hook_restarts_selection_and_blocks_early_stop(data):
    """A hook acting from epoch s: no early stop before s, and the kept model is from >= s."""
    cfg = dataclasses.replace(SMALL, backbone="gru4rec", epochs=40, patience=0)
    plain = train(build_model(cfg, data.n_items, MAX_LEN), data, cfg, n_real=data.n_users,
                  seed=0, progress=False)

    class Late(Hook):
        selection_start_epoch = len(plain.history) + 2  # after plain training stopped

    start = Late.selection_start_epoch
    res = train(build_model(cfg, data.n_items, MAX_LEN), data, cfg, n_real=data.n_users,
                seed=0, hook=Late(), progress=False)
    assert len(res.history) > start and res.best_epoch >= start
    drop_time = [{k: v for k, v in h.items() if k != "time_s"} for h in res.history]
    assert drop_time[:len(plain.history)] == [
        {k: v for k, v in h.items() if k != "time_s"} for h in plain.history]


def test_hook_gets_the_given_weights_every_epoch(data):
    """A hook that scales its input must not compound across epochs (LoRec's σ(w)/σ(w0))."""
    seen = []

    class Halve(Hook):
        def on_epoch_start(self, epoch, model, weights):
            seen.append(weights.copy())
            return weights * 0.5

    cfg = dataclasses.replace(SMALL, backbone="gru4rec", epochs=3, patience=5)
    given = np.linspace(0.5, 1.5, data.n_users).astype(np.float32)
    train(build_model(cfg, data.n_items, MAX_LEN), data, cfg, n_real=data.n_users,
          user_weights=given, seed=0, hook=Halve(), progress=False)
    assert len(seen) == 3
    for w in seen:
        np.testing.assert_array_equal(w, given)


def test_hook_cannot_revive_a_removed_user(data):
    """The sanitation's weight 0 means "not in the data", whatever a hook returns."""
    users = []

    class Revive(Hook):
        def on_epoch_start(self, epoch, model, weights):
            return np.ones_like(weights)

        def batch_loss(self, model, batch, loss, vectors):
            users.extend(batch["users"].tolist())
            return loss

    cfg = dataclasses.replace(SMALL, backbone="gru4rec", epochs=2, patience=5)
    given = np.ones(data.n_users, dtype=np.float32)
    given[:5] = 0.0
    res = train(build_model(cfg, data.n_items, MAX_LEN), data, cfg, n_real=data.n_users,
                user_weights=given, seed=0, hook=Revive(), progress=False)
    assert users and not set(users) & set(range(5))
    assert res.hook_time_s > 0


def test_hook_reweights_and_early_stopping_restores_best(data):
    seen = []

    class Dropper(Hook):
        def on_epoch_start(self, epoch, model, weights):
            seen.append(epoch)
            weights[: data.n_users // 2] = 0.0  # drop half the users from this epoch
            return weights

        def batch_loss(self, model, batch, loss, vectors):
            assert (batch["weights"] > 0).all()
            return loss

    cfg = dataclasses.replace(SMALL, backbone="gru4rec", epochs=40, patience=2)
    model = build_model(cfg, data.n_items, MAX_LEN)
    epochs = []
    res = train(model, data, cfg, n_real=data.n_users, seed=0, hook=Dropper(), progress=False,
                on_epoch=epochs.append)
    assert seen == [h["epoch"] for h in res.history] == [e["epoch"] for e in epochs]
    assert len(res.history) == res.best_epoch + 3  # stopped after 2 epochs without a gain
    best = res.history[res.best_epoch]["valid_ndcg@10"]
    again = ranking_metrics(res.model, data, data.n_users, np.zeros(0, np.int64), EVAL, "valid")
    assert again["ndcg@10"] == pytest.approx(best)
