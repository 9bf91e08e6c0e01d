import pytest

from recsec_ray.config import (
    AttackConfig,
    DataConfig,
    DefenseConfig,
    EvalConfig,
    JobConfig,
    LLMConfig,
    ModelConfig,
)
from recsec_ray.errors import ConfigError

BAD = [
    (lambda: AttackConfig(name="sybil"), "attack.name: 'sybil' is not one of none, random"),
    (lambda: AttackConfig(poison_rate=-0.1), "attack.poison_rate: -0.1 must be >= 0"),
    (lambda: AttackConfig(poison_rate=1.5), "attack.poison_rate: 1.5 must be <= 1"),
    (lambda: AttackConfig(poison_rate="lots"), "attack.poison_rate: expected float"),
    (lambda: AttackConfig(trigger="  "), "attack.trigger: must not be empty"),
    (lambda: AttackConfig(n_targets=0), "attack.n_targets: 0 must be >= 1"),
    (lambda: ModelConfig(dim=-4), "model.dim: -4 must be >= 1"),
    (lambda: ModelConfig(dim=10, heads=3), "model.dim: 10 must be divisible"),
    (lambda: ModelConfig(backbone="transformer"), "model.backbone: 'transformer' is not one"),
    (lambda: ModelConfig(epochs=2.5), "model.epochs: expected int"),
    (lambda: ModelConfig(device="tpu"), "model.device: 'tpu'"),
    (lambda: DataConfig(tie_rule="latest"), "data.tie_rule: 'latest' is not one of file"),
    (lambda: DataConfig(name="custom"), "data.interactions and data.titles"),
    (lambda: JobConfig(seed=-1), "seed: -1 must be >= 0"),
    (lambda: JobConfig(attack=AttackConfig(name="badrec")),
     "attack.name: badrec needs a victim that reads titles"),
    (lambda: AttackConfig(name="badrec", poison_rate=0.01), "attack.poison_rate: BadRec"),
    (lambda: AttackConfig(poison_rate=float("nan")),
     "attack.poison_rate: nan must be a finite number"),
    (lambda: EvalConfig(batch_size=0), "eval.batch_size"),
    (lambda: EvalConfig(target_ks=(0,)), "eval.target_ks"),
    (lambda: JobConfig(model=ModelConfig(backbone="pop", items="text")), "model.items: 'pop'"),
    (lambda: JobConfig(model=ModelConfig(backbone="llmrec"), defense=DefenseConfig(name="lorec")),
     "defense.name: lorec needs a sequential backbone"),
    (lambda: JobConfig(model=ModelConfig(backbone="pop"), defense=DefenseConfig(name="apr")),
     "defense.name: apr needs a sequential backbone"),
    (lambda: DefenseConfig(known_attack="dp"), "defense.known_attack: 'dp' is not one of"),
    (lambda: AttackConfig(name="shill"), "attack.name: 'shill' is not one of none, random"),
    (lambda: DataConfig(name="ml-20m"), "data.name: 'ml-20m' is not one of ml-100k"),
    (lambda: JobConfig(model=ModelConfig(epochs=20),
                       defense=DefenseConfig(name="lorec", lorec_schedule="reference")),
     "defense.lorec_start_epoch"),
    (lambda: DefenseConfig(lorec_schedule="slow"), "defense.lorec_schedule: 'slow' is not one"),
    (lambda: DefenseConfig(llm4dec_loss="mse"), "defense.llm4dec_loss"),
    (lambda: DefenseConfig(user_fpr=0.0), "defense.user_fpr"),
    (lambda: AttackConfig(targets_per_user=-1), "attack.targets_per_user"),
    (lambda: ModelConfig(select_after=-2), "model.select_after"),
    (lambda: DefenseConfig(apr_eps=-1.0), "defense.apr_eps"),
    (lambda: LLMConfig(device="tpu"), "llm.device"),
    (lambda: JobConfig(seed=10**400),
     "seed: 1000000000000000000000000000000000000... must be <= 4294967295"),
]


@pytest.mark.parametrize("make, message", BAD)
def test_bad_values_fail_at_construction_naming_the_field(make, message):
    with pytest.raises(ConfigError) as err:
        make()
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_dotted_and_nested_dicts_round_trip():
    cfg = JobConfig.from_dict({"attack": {"name": "dp", "poison_rate": 0.02},
                               "model.backbone": "gru4rec", "seed": 3})
    assert cfg.attack.name == "dp" and cfg.model.backbone == "gru4rec" and cfg.seed == 3
    assert JobConfig.from_dict(cfg.flat()) == cfg


def test_unknown_keys_are_named():
    with pytest.raises(ConfigError, match=r"attack.rate: unknown field"):
        JobConfig.from_dict({"attack.rate": 0.1})
    with pytest.raises(ConfigError, match=r"atack: unknown config key"):
        JobConfig.from_dict({"atack": {"name": "dp"}})


def test_replace_revalidates():
    cfg = JobConfig()
    assert cfg.replace(**{"attack.poison_rate": 0.1}).attack.poison_rate == 0.1
    with pytest.raises(ConfigError, match="attack.poison_rate"):
        cfg.replace(**{"attack.poison_rate": 2.0})


def test_yaml_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("attack:\n  name: dp\n  poison_rate: [0.1\n")
    with pytest.raises(ConfigError, match=r"job.yaml:\d+: not valid YAML"):
        JobConfig.from_yaml(path)
    path.write_text("attack:\n  name: dp\nmodel:\n  backbone: sasrec\n")
    assert JobConfig.from_yaml(path).attack.name == "dp"
    with pytest.raises(ConfigError, match="config file not found"):
        JobConfig.from_yaml(tmp_path / "missing.yaml")


def test_data_paths_are_pinned_where_the_config_is_made(tmp_path, monkeypatch):
    """Trials run in their own directories, so a relative folder or file must not travel."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.csv").write_text("user,item,timestamp\n")
    (tmp_path / "my-encoder").mkdir()
    cfg = JobConfig.from_dict({"data.name": "custom", "data.data_dir": "../shared",
                               "data.interactions": "mine.csv", "data.titles": "titles.csv",
                               "llm.cache_dir": "cache", "model.text_encoder": "my-encoder",
                               "llm.embed_model": "org/name"})
    assert cfg.data.data_dir == str(tmp_path.parent / "shared")
    assert cfg.data.interactions == str(tmp_path / "mine.csv")
    assert cfg.data.titles == "titles.csv"  # not here: looked up under the data folder
    assert cfg.llm.cache_dir == str(tmp_path / "cache")
    assert cfg.model.text_encoder == str(tmp_path / "my-encoder")
    assert cfg.llm.embed_model == "org/name" and cfg.llm.model == "smollm2"  # names, not paths
    assert JobConfig.from_dict(cfg.flat()) == cfg  # a trial rebuilds the same config


def test_errors_survive_pickling():
    """Ray sends a trial's error to the driver pickled; it must arrive as the same message."""
    import pickle

    from recsec_ray.errors import DataFileError, ModelOutputError
    from recsec_ray.llm.backend import LLMRequestError, LLMServiceError

    for err in (DataFileError("u.data", "bad timestamp", 3), DataFileError("x", "missing"),
                ConfigError("a.b: no"), ModelOutputError("nan"), LLMRequestError("r"),
                LLMServiceError("s")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
