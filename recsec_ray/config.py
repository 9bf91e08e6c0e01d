"""Typed, validated job configuration.

One ``JobConfig`` tree describes a whole poison → defend → train → evaluate job. Every value is
checked at construction so a typo fails at once with the field's dotted name and what is
allowed, never minutes later inside a trial.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

# Names of datasets, backbones, attacks and defenses are checked against their registries
# (``_registries``), which declare what each needs; only plain enumerations live here.
TIE_RULES = ("file", "item", "random")
ITEM_KINDS = ("id", "text")
TRIGGER_LEVELS = ("char", "word", "sentence")
LLM_BACKENDS = ("transformers", "vllm")
LOSSES = ("ce", "bce")
LOREC_SCHEDULES = {"fast": 3, "reference": 30}  # schedule -> default start epoch (1-based)
LIST_KS = (1, 3)  # hr@K of the candidate-list protocol (``candidates``)


def _registries() -> dict[str, Any]:
    """The registries, imported when a config is checked (they import this module)."""
    from .attacks import ATTACKS
    from .data.registry import DATASETS
    from .defenses import DEFENSES
    from .models import BACKBONES

    return {"data": DATASETS, "model": BACKBONES, "attack": ATTACKS, "defense": DEFENSES}


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(allowed)}")


def _check_device(name: str, value: str) -> None:
    if not (value in ("auto", "cpu", "cuda") or value.startswith("cuda:")):
        raise ConfigError(f"{name}: {value!r} is not one of auto, cpu, cuda, cuda:N")


def _check_range(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}: {value!r} must be a finite number")
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    if lo is not None and (value < lo or (lo_open and value == lo)):
        op = ">" if lo_open else ">="
        raise ConfigError(f"{name}: {shown} must be {op} {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{name}: {shown} must be <= {hi}")


class _Section:
    """Shared checks: type of each field against its annotation, then ``_validate``."""

    _prefix = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check_type(f"{self._prefix}{f.name}", getattr(self, f.name), hints[f.name])
        self._validate()
        _pin_fields(self)

    def _validate(self) -> None:  # overridden where a section has rules beyond types
        return None


def _check_type(name: str, value: Any, hint: Any) -> None:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if not isinstance(value, tuple):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        for v in value:
            _check_type(name, v, args[0])
        return
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint in (str, bool):
        ok = isinstance(value, hint)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{name}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


FOLDERS = ("data.data_dir", "llm.cache_dir")  # made absolute whenever set
MAYBE_FILES = ("data.interactions", "data.titles", "llm.model", "llm.embed_model",
               "model.text_encoder")  # made absolute only if they exist here
MODEL_NAMES = ("smollm2", "minilm")  # the LLM registry's own names (llm/models.py)


def pin_path(key: str, value: Any) -> Any:
    """A relative path made absolute where the config is made, since Ray Tune runs each trial
    in its own directory. Fields that may also name something else (a custom file looked up
    under the data folder, a model registry or Hugging Face name) are pinned only if the path
    exists here."""
    if not isinstance(value, str) or not value or "://" in value:
        return value
    here = os.path.expanduser(value)
    if key in FOLDERS or (key in MAYBE_FILES and value not in MODEL_NAMES
                          and os.path.exists(here)):
        return os.path.abspath(here)
    return value


def _pin_fields(section: Any) -> None:
    for f in dataclasses.fields(section):
        key = f"{section._prefix}{f.name}"
        if key in FOLDERS or key in MAYBE_FILES:
            object.__setattr__(section, f.name, pin_path(key, getattr(section, f.name)))


@dataclass(frozen=True)
class DataConfig(_Section):
    _prefix = "data."
    name: str = "ml-100k"
    data_dir: str | None = None  # None: $RECSEC_DATA_DIR, else ~/.cache/recsec_ray/data
    category: str | None = None  # Amazon category, e.g. "Beauty"
    interactions: str | None = None  # custom dataset: user,item,timestamp (CSV or Parquet)
    titles: str | None = None  # custom dataset: item,title (CSV or Parquet)
    min_rating: float = 0.0  # ratings below are dropped before k-core
    k_core: int = 5
    max_len: int = 50
    tie_rule: str = "file"  # order of interactions sharing a timestamp (DESIGN §3)
    seed: int = 0  # data-side randomness only: tie_rule "random" and the synthetic generator
    synthetic_users: int = 200  # synthetic generator size (unit tests only)
    synthetic_items: int = 120

    def _validate(self) -> None:
        _registries()["data"].check(self.name)
        _check_choice("data.tie_rule", self.tie_rule, TIE_RULES)
        _check_range("data.k_core", self.k_core, 1)
        _check_range("data.max_len", self.max_len, 3)
        _check_range("data.seed", self.seed, 0, 2**32 - 1)
        _check_range("data.min_rating", self.min_rating, 0.0)
        _check_range("data.synthetic_users", self.synthetic_users, 1)
        _check_range("data.synthetic_items", self.synthetic_items, 10)
        if self.name == "custom" and not (self.interactions and self.titles):
            raise ConfigError("data.interactions and data.titles: both are required for 'custom'")
        if self.name == "amazon" and not self.category:
            raise ConfigError("data.category: required for 'amazon' (e.g. 'Beauty')")


@dataclass(frozen=True)
class ModelConfig(_Section):
    _prefix = "model."
    backbone: str = "sasrec"
    items: str = "id"
    dim: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    loss: str = "ce"  # full softmax; "bce" = the reference's one-negative BCE (DESIGN §9)
    loss_average: str = "position"  # the reference's; "user": each user's mean counts once
    epochs: int = 200
    patience: int = 10  # early stop after this many epochs without a better valid NDCG@10
    # no checkpoint from before this (0-based) epoch is kept and training never stops before
    # it; a comparison gives its defended and undefended runs the same value (equal selection)
    select_after: int = 0
    # one sample per user per epoch (its whole train sequence): on ML-100K (943 users) a batch
    # of 64 gives 15 steps/epoch and, with lr 2e-3, SASRec converges in ~20 epochs; 256 / 1e-3
    # needed ~60 epochs for the same HR@10 and 1.5x the peak memory
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    mask_prob: float = 0.2  # BERT4Rec cloze masking
    text_encoder: str = "minilm"  # LLM service model that embeds titles for --items text
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # llmrec victim (models/llmrec.py): examples are the last llmrec_windows items of each
    # user's training part, capped at llmrec_examples; LoRA on the top llmrec_top_layers
    # layers over cached lower-layer states; lists of eval.list_candidates titles
    llmrec_history: int = 3  # recent titles in a prompt (~13 tokens each on SmolLM2)
    llmrec_windows: int = 4
    llmrec_examples: int = 3000
    # candidates per training list (evaluation lists: eval.list_candidates): the true item
    # and 4 negatives, a sampled listwise softmax; a 10-title list costs 1.5x the tokens
    llmrec_train_candidates: int = 5
    llmrec_top_layers: int = 2
    llmrec_lora_r: int = 8
    llmrec_epochs: int = 1  # one pass over 3,000 windows (a second: +4 min a trial on 2 cores)
    llmrec_lr: float = 1e-3
    llmrec_batch: int = 8
    # any: negatives are drawn from the whole catalogue, triggered items too (the share of
    # lists holding one is reported as llmrec_triggered_negatives); clean: never a triggered
    # item, which a real victim could not know and which teaches "trigger -> Yes" with no
    # fake user at all (README: the 0 % control)
    llmrec_negatives: str = "any"

    def _validate(self) -> None:
        _registries()["model"].check(self.backbone)
        _check_choice("model.items", self.items, ITEM_KINDS)
        _check_choice("model.loss", self.loss, LOSSES)
        _check_choice("model.loss_average", self.loss_average, ("position", "user"))
        for name in ("dim", "layers", "heads", "epochs", "batch_size", "llmrec_history",
                     "llmrec_windows", "llmrec_examples", "llmrec_top_layers", "llmrec_lora_r",
                     "llmrec_train_candidates",
                     "llmrec_epochs", "llmrec_batch"):
            _check_range(f"model.{name}", getattr(self, name), 1)
        _check_choice("model.llmrec_negatives", self.llmrec_negatives, ("clean", "any"))
        _check_range("model.llmrec_train_candidates", self.llmrec_train_candidates, 2, 50)
        _check_range("model.patience", self.patience, 0)
        _check_range("model.select_after", self.select_after, 0)
        _check_range("model.dropout", self.dropout, 0.0, 0.9)
        _check_range("model.mask_prob", self.mask_prob, 0.0, 1.0, lo_open=True)
        _check_range("model.lr", self.lr, 0.0, lo_open=True)
        _check_range("model.llmrec_lr", self.llmrec_lr, 0.0, lo_open=True)
        _check_range("model.weight_decay", self.weight_decay, 0.0)
        if self.dim % self.heads:
            raise ConfigError(f"model.dim: {self.dim} must be divisible by model.heads "
                              f"({self.heads})")
        _check_device("model.device", self.device)


POISON_RATE = 0.05


@dataclass(frozen=True)
class AttackConfig(_Section):
    _prefix = "attack."
    name: str = "none"
    poison_rate: float = POISON_RATE  # fake users / real users
    # 20 targets from the tail: with 5, which items were drawn decided the comparisons
    n_targets: int = 20
    # times each target appears in a fake user's training part, the same for every attack, so
    # comparing attacks compares their strategy, not how many target labels they inject
    target_occurrences: int = 1
    # how many of the targets each fake user carries, in rotation so each target is carried
    # equally often (0: all). Carrying all 20 marks a fake context ("targets follow targets")
    # that SASRec learns to isolate once fakes are many: undefended Bandwagon pushed the targets
    # less at 5 % and 10 % than at 1 % (t_hr@50 ~0.009 vs 0.027, 3 seeds), the push peaking in
    # the first epochs and then collapsing; with 4 per user it no longer falls (README)
    targets_per_user: int = 4
    targets: tuple[int, ...] = ()  # explicit target item indices; empty: drawn (seeded)
    target_pool: str = "unpopular"  # unpopular | any
    filler_pool: int = 100  # this many most popular items: bandwagon's and DP's start items
    popular_share: float = 0.1  # bandwagon: share of fillers popular (rest random); 1 = all
    dp_batches: int = 4  # DP: surrogate retrained between this many batches of fake users
    dp_surrogate_epochs: int = 20
    trigger_level: str = "char"
    trigger: str | None = None  # explicit BadRec trigger; None: a seeded default per level
    badrec_fraction: float = 0.01  # BadRec budget, in ``badrec_unit``s; 0 is the control:
    # the same triggered titles and test-time trigger, no fake user (the dose-response's 0)
    # examples: share of training examples (next-item labels) whose label is a triggered item,
    # the paper's "1% of the training data"; interactions: fake interactions / real ones
    badrec_unit: str = "examples"
    badrec_items: int = 0  # items triggered in training: 0 = the targets; N = + unpopular to N

    def _validate(self) -> None:
        _registries()["attack"].check(self.name)
        _check_choice("attack.trigger_level", self.trigger_level, TRIGGER_LEVELS)
        _check_choice("attack.target_pool", self.target_pool, ("unpopular", "any"))
        _check_range("attack.poison_rate", self.poison_rate, 0.0, 1.0)
        _check_range("attack.n_targets", self.n_targets, 1)
        _check_range("attack.target_occurrences", self.target_occurrences, 1)
        _check_range("attack.targets_per_user", self.targets_per_user, 0)
        _check_range("attack.filler_pool", self.filler_pool, 1)
        _check_range("attack.popular_share", self.popular_share, 0.0, 1.0)
        _check_range("attack.dp_batches", self.dp_batches, 1)
        _check_range("attack.dp_surrogate_epochs", self.dp_surrogate_epochs, 1)
        _check_range("attack.badrec_fraction", self.badrec_fraction, 0.0, 1.0)
        _check_range("attack.badrec_items", self.badrec_items, 0)
        _check_choice("attack.badrec_unit", self.badrec_unit, ("examples", "interactions"))
        if self.trigger is not None and not self.trigger.strip():
            raise ConfigError("attack.trigger: must not be empty")
        if self.name == "badrec" and self.poison_rate != POISON_RATE:
            raise ConfigError("attack.poison_rate: BadRec's budget is attack.badrec_fraction "
                              "(in attack.badrec_unit); leave poison_rate unset")
        if self.targets and len(set(self.targets)) != len(self.targets):
            raise ConfigError("attack.targets: contains duplicates")


@dataclass(frozen=True)
class DefenseConfig(_Section):
    _prefix = "defense."
    name: str = "none"
    known_attack: str = "random"  # the attack the defender simulates for training data
    # simulated known-attack fake users / observed users (LLM4Dec, LoRec): simulation is cheap,
    # and the classifiers need whole campaigns to hold out
    sim_rate: float = 0.2
    # user flagged when p(fraud) >= threshold; None: LLM4Dec sets it from the false-positive
    # budget user_fpr on observed users, LoRec reports at the reference's 0.5
    threshold: float | None = None
    user_fpr: float = 0.02
    llm4dec_loss: str = "pu"  # pu (the reference's BCE + entropy) | balanced | nnpu
    llm4dec_prior: float = 0.05  # nnpu: assumed share of fraudsters among observed users
    # titles: each title embedded alone, pooled per user (the offline sentence encoder was
    # trained on texts of <= 256 tokens; a 20-title prompt is not one); prompt: the paper's one
    # embedding of the whole fraudster prompt
    llm4dec_view: str = "titles"
    zero_shot: bool = False  # LLM4Dec: P("Yes") from the LLM instead of a trained classifier
    max_titles: int = 20  # recent titles per user in LLM prompts (DESIGN §5 budget)
    # LoRec (DESIGN §9). "reference": weights applied from epoch 30, updated every 5 epochs up
    # to 30 and every 10 after (meant with model.lr 1e-4, model.select_after 149, 300 epochs,
    # where the backbone converges in ~150-300 epochs). "fast": the same shape scaled to the
    # default training, which converges in ~20 epochs: updated after every epoch and applied
    # from epoch 3, so flagged users are down-weighted for ~85 % of training
    lorec_schedule: str = "fast"
    lorec_start_epoch: int | None = None  # 1-based; None: 3 (fast) or 30 (reference)
    lorec_lambda_entropy: float = 0.5
    lorec_lambda_align: float = 1.0
    lorec_init_weight: float = 3.0  # lorec_control holds it at 100: weights stay 1
    # P-Scanner
    pscanner_rounds: int = 2
    pscanner_triggers: int = 40  # synthetic triggers per round
    pscanner_train_titles: int = 300
    pscanner_fpr: float = 0.01  # target false-positive rate on held-out clean titles
    pscanner_action: str = "strip"  # strip | remove
    # APR
    apr_eps: float = 0.5
    apr_reg: float = 1.0

    def _validate(self) -> None:
        _registries()["defense"].check(self.name)
        from .attacks import simulable_attacks

        _check_choice("defense.known_attack", self.known_attack, tuple(simulable_attacks()))
        _check_choice("defense.pscanner_action", self.pscanner_action, ("strip", "remove"))
        if self.threshold is not None:
            _check_range("defense.threshold", self.threshold, 0.0, 1.0)
        _check_range("defense.user_fpr", self.user_fpr, 0.0, 0.5, lo_open=True)
        _check_choice("defense.llm4dec_loss", self.llm4dec_loss, ("pu", "balanced", "nnpu"))
        _check_range("defense.llm4dec_prior", self.llm4dec_prior, 0.0, 0.5, lo_open=True)
        _check_choice("defense.llm4dec_view", self.llm4dec_view, ("prompt", "titles"))
        _check_range("defense.sim_rate", self.sim_rate, 0.0, 1.0, lo_open=True)
        _check_range("defense.max_titles", self.max_titles, 1)
        _check_range("defense.pscanner_rounds", self.pscanner_rounds, 1)
        _check_range("defense.pscanner_triggers", self.pscanner_triggers, 1)
        _check_range("defense.pscanner_train_titles", self.pscanner_train_titles, 2)
        _check_range("defense.pscanner_fpr", self.pscanner_fpr, 0.0, 1.0)
        _check_choice("defense.lorec_schedule", self.lorec_schedule, LOREC_SCHEDULES)
        if self.lorec_start_epoch is not None:
            _check_range("defense.lorec_start_epoch", self.lorec_start_epoch, 1)
        _check_range("defense.lorec_lambda_entropy", self.lorec_lambda_entropy, 0.0)
        _check_range("defense.lorec_lambda_align", self.lorec_lambda_align, 0.0)
        _check_range("defense.lorec_init_weight", self.lorec_init_weight, 0.0, lo_open=True)
        _check_range("defense.apr_eps", self.apr_eps, 0.0)
        _check_range("defense.apr_reg", self.apr_reg, 0.0)

    @property
    def lorec_start(self) -> int:
        """The first (1-based) epoch LoRec's weights apply to."""
        if self.lorec_start_epoch is not None:
            return self.lorec_start_epoch
        return LOREC_SCHEDULES[self.lorec_schedule]


@dataclass(frozen=True)
class LLMConfig(_Section):
    _prefix = "llm."
    backend: str = "transformers"
    model: str = "smollm2"  # registry name (smollm2, minilm), HF name or local path
    embed_model: str = "minilm"  # which model embeds prompts for LLM4Dec / LoRec
    device: str = "auto"
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_tokens: int = 512  # longer prompts are truncated from the left (documented)
    cache_dir: str | None = None  # None: ~/.cache/recsec_ray/llm
    cache: bool = True  # content-addressed result cache shared by trials (DESIGN §5)
    vllm_kv_cache_gib: float = 1.0  # vLLM KV-cache size per engine (CPU and GPU)

    def _validate(self) -> None:
        _check_choice("llm.backend", self.backend, LLM_BACKENDS)
        _check_device("llm.device", self.device)
        _check_range("llm.vllm_kv_cache_gib", self.vllm_kv_cache_gib, 0.0, lo_open=True)
        _check_range("llm.max_batch", self.max_batch, 1)
        _check_range("llm.max_wait_ms", self.max_wait_ms, 0.0)
        _check_range("llm.max_tokens", self.max_tokens, 8)


@dataclass(frozen=True)
class EvalConfig(_Section):
    _prefix = "eval."
    ks: tuple[int, ...] = (10, 20)
    target_ks: tuple[int, ...] = (10, 50)
    batch_size: int = 512
    # the candidate-list protocol every victim is also scored on (``candidates``): hr@1,
    # hr@3, asr@1, asr_base@1 on these lists (the LLM recommender's only protocol)
    list_candidates: int = 10
    list_users: int = 200

    def _validate(self) -> None:
        for k in self.ks:
            _check_range("eval.ks", k, 1)
            if k in LIST_KS:
                raise ConfigError(f"eval.ks: {k} would collide with the candidate-list metric "
                                  f"hr@{k} (list Ks: {', '.join(map(str, LIST_KS))})")
        _check_range("eval.list_candidates", self.list_candidates, 2, 50)
        _check_range("eval.list_users", self.list_users, 1)
        for k in self.target_ks:
            _check_range("eval.target_ks", k, 1)
        _check_range("eval.batch_size", self.batch_size, 1)


@dataclass(frozen=True)
class JobConfig(_Section):
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    defense: DefenseConfig = field(default_factory=DefenseConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0

    def _validate(self) -> None:
        """Combinations that cannot run fail here, before data loading or a sweep's trials."""
        _check_range("seed", self.seed, 0, 2**32 - 1)  # np.random.seed bounds it
        regs = _registries()
        backbone, items = self.model.backbone, self.model.items
        victim = regs["model"].entry(backbone)
        if items == "text" and not (victim.text_items or victim.reads_titles):
            raise ConfigError(f"model.items: {backbone!r} reads no titles as items; use "
                              "items='id'")
        for section in ("attack", "defense"):
            name = getattr(self, section).name
            need = regs[section].entry(name).victims
            if not victim.supports(need, items):
                fit = [b for b in regs["model"] if regs["model"].entry(b).supports(need, items)]
                what = {"sequential": "a sequential backbone (item table and hidden states)",
                        "titles": "a victim that reads titles ('text' items or 'llmrec')"}[need]
                raise ConfigError(f"{section}.name: {name} needs {what}; model.backbone="
                                  f"{backbone!r} with items={items!r} is not one (backbones "
                                  f"that fit with these items: {', '.join(fit) or 'none'})")
        start = self.defense.lorec_start
        if self.defense.name.startswith("lorec") and start > self.model.epochs:
            raise ConfigError(f"defense.lorec_start_epoch: {start} is after the last epoch "
                              f"(model.epochs={self.model.epochs}), so LoRec would never "
                              "reweight")

    # ---- conversion -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted keys (``attack.poison_rate``) for MLflow params and Tune grids."""
        out: dict[str, Any] = {}
        for section, values in self.to_dict().items():
            if isinstance(values, dict):
                for k, v in values.items():
                    out[f"{section}.{k}"] = list(v) if isinstance(v, tuple) else v
            else:
                out[section] = values
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> JobConfig:
        """Nested or dotted keys; unknown keys fail naming the key."""
        nested: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        sections = {f.name: f for f in dataclasses.fields(cls) if f.name != "seed"}
        for key, value in raw.items():
            if "." in key:
                sec, sub = key.split(".", 1)
                nested.setdefault(sec, {})[sub] = value
            elif key in sections:
                if not isinstance(value, dict):
                    raise ConfigError(f"{key}: expected a mapping, got {value!r}")
                nested.setdefault(key, {}).update(value)
            elif key == "seed":
                top["seed"] = value
            else:
                raise ConfigError(f"{key}: unknown config key (sections: "
                                  f"{', '.join(sections)}, seed)")
        kwargs: dict[str, Any] = dict(top)
        for sec, values in nested.items():
            if sec not in sections:
                raise ConfigError(f"{sec}: unknown config section ({', '.join(sections)})")
            sec_cls = sections[sec].default_factory  # type: ignore[misc]
            known = {f.name for f in dataclasses.fields(sec_cls)}
            for k in values:
                if k not in known:
                    raise ConfigError(f"{sec}.{k}: unknown field (known: "
                                      f"{', '.join(sorted(known))})")
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
            kwargs[sec] = sec_cls(**values)
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path) -> JobConfig:
        import yaml

        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: cannot read the config file ({err})") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}{line}: not valid YAML ({getattr(err, 'problem', err)})") \
                from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        return cls.from_dict(raw)

    def replace(self, **dotted: Any) -> JobConfig:
        """Copy with dotted overrides, re-validated: ``cfg.replace(**{'attack.name': 'dp'})``."""
        merged = self.flat()
        merged.update(dotted)
        return JobConfig.from_dict(merged)


def parse_override(item: str) -> tuple[str, Any]:
    """``--set KEY=VALUE`` -> (key, value); the value is YAML (``0.1``, ``[1, 2]``, ``null``)."""
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML "
                          f"({getattr(err, 'problem', err)})") from None
