"""The ORT (.ort flatbuffer) -> transformers Moonshine converter, checked against the ORT graphs themselves.

base: the graph dequantizes int8 weights and computes in fp32, so the float model must match it up to
float rounding: identical greedy tokens on every clip.
tiny: the graph is ORT-dynamic-quantized: it quantizes *activations* to uint8 at run time too, which a
float model of the dequantized weights cannot (and should not) reproduce. Its encoder output differs by
a few percent and greedy tokens may diverge late in a clip, so tiny is held to a looser contract:
identical tokens on all clips but one, and a long common prefix everywhere.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
transformers = pytest.importorskip("transformers")

from edgeasr.audio import SAMPLE_RATE, prepare_audio, split_on_silence  # noqa: E402
from edgeasr.registry import fetch_package, find_file  # noqa: E402
from edgeasr.zoo.catalog import CATALOG, MOONSHINE_TOKENIZER, MOONSHINE_VOICE  # noqa: E402
from edgeasr.zoo.ort_moonshine import convert_ort_moonshine  # noqa: E402

MODELS = ["moonshine-tiny", "moonshine-base"]
TOKENS_PER_SECOND = 6.5  # Moonshine's own cap; without one it loops on trailing silence
# Encoder relative error (Frobenius) vs the graph. Measured: base ~1e-5 (rounding only) and tiny
# ~0.03-0.04 (activation quantization in the graph). Bounds leave headroom over the worst clip.
ENCODER_REL = {"moonshine-base": 1e-4, "moonshine-tiny": 0.1}


@pytest.fixture(scope="module")
def moonshine_clips() -> dict[str, np.ndarray]:
    """beckett (10 s) and two_cities (44 s) cut at quiet points into pieces under 20 s: Moonshine
    hallucinates on long windows, and the shared 25 s clips are too long for it."""
    root = fetch_package(MOONSHINE_VOICE)
    clips = {"beckett": prepare_audio(find_file(root, "assets/beckett.wav"))}
    two_cities = prepare_audio(find_file(root, "assets/two_cities.wav"))
    for i, (start, end) in enumerate(split_on_silence(two_cities, 18.0)):
        clips[f"two_cities_{i}"] = two_cities[start:end]
    assert len(clips) >= 4 and all(c.size < 20 * SAMPLE_RATE for c in clips.values())
    return clips


def _max_tokens(audio: np.ndarray) -> int:
    return math.ceil(TOKENS_PER_SECOND * audio.size / SAMPLE_RATE)


class OrtMoonshine:
    """Greedy decoding with the original graphs, as moonshine's own ONNX runner does it."""

    def __init__(self, encoder: Path, decoder: Path) -> None:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.encoder = ort.InferenceSession(str(encoder), opts, providers=["CPUExecutionProvider"])
        self.decoder = ort.InferenceSession(str(decoder), opts, providers=["CPUExecutionProvider"])
        self.encoder_inputs = {i.name for i in self.encoder.get_inputs()}
        self.decoder_inputs = {i.name: i for i in self.decoder.get_inputs()}
        self.past_names = [n for n in self.decoder_inputs if n.startswith("past_key_values.")]

    def encode(self, audio: np.ndarray) -> np.ndarray:
        feeds = {"input_values": audio[None]}
        if "attention_mask" in self.encoder_inputs:  # tiny's graph takes a sample-level mask
            feeds["attention_mask"] = np.ones_like(feeds["input_values"], dtype=np.int64)
        return self.encoder.run(None, feeds)[0]

    def greedy(self, audio: np.ndarray, encoded: np.ndarray, max_new_tokens: int, heads: int,
               head_dim: int) -> list[int]:
        # The merged decoder takes every past K/V input on every call; on the first call (no-cache
        # branch) they are empty and ignored. Cross-attention K/V are computed once, on that first call.
        past = {n: np.zeros((1, heads, 0, head_dim), np.float32) for n in self.past_names}
        tokens, ids = [1], [[1]]
        for step in range(max_new_tokens):
            feeds = {"input_ids": np.array(ids, np.int64), "encoder_hidden_states": encoded,
                     "use_cache_branch": np.array([step > 0]), **past}
            if "encoder_attention_mask" in self.decoder_inputs:
                feeds["encoder_attention_mask"] = np.ones((1, audio.size), np.int64)
            logits, *present = self.decoder.run(None, feeds)
            token = int(logits[0, -1].argmax())
            tokens.append(token)
            if token == 2:
                break
            ids = [[token]]
            for name, value in zip(self.past_names, present):
                if step == 0 or ".decoder." in name:  # encoder K/V come back empty from the cache branch
                    past[name] = value
        return tokens


@pytest.fixture(scope="module", params=MODELS)
def pair(request, tmp_path_factory) -> dict:
    """A fresh conversion (not the user's cache, which an older converter may have written) and its source."""
    name = request.param
    entry = CATALOG[name]
    root = fetch_package(entry.packages[0])
    encoder, decoder = find_file(root, entry.options["encoder"]), find_file(root, entry.options["decoder"])
    tokenizer_json = find_file(fetch_package(MOONSHINE_TOKENIZER), "assets/tokenizer.json")
    hf_dir = tmp_path_factory.mktemp(f"{name}-hf")
    start = time.perf_counter()
    convert_ort_moonshine(encoder, decoder, tokenizer_json, hf_dir, entry.options["size"])
    print(f"\n{name}: conversion {time.perf_counter() - start:.1f} s")
    model, info = transformers.MoonshineForConditionalGeneration.from_pretrained(hf_dir, output_loading_info=True)
    return {"name": name, "hf_dir": hf_dir, "model": model.eval(), "info": info,
            "ort": OrtMoonshine(encoder, decoder), "size": entry.options["size"]}


def test_directory_is_complete_and_loads_strictly(pair):
    hf_dir, model, info = pair["hf_dir"], pair["model"], pair["info"]
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "preprocessor_config.json", "generation_config.json"):
        assert (hf_dir / f).exists(), f
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    n_keys = len(model.state_dict())
    assert n_keys == {"tiny": 161, "base": 211}[pair["size"]]
    assert model.model.decoder.embed_tokens.weight.data_ptr() == model.proj_out.weight.data_ptr()
    cfg = json.loads((hf_dir / "config.json").read_text())
    if pair["size"] == "base":
        assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["encoder_num_hidden_layers"]) == (416, 1664, 8)
        assert cfg["rope_parameters"]["partial_rotary_factor"] == pytest.approx(0.62)
    params = sum(p.numel() for p in model.parameters())
    assert params / 1e6 == pytest.approx(CATALOG[pair["name"]].params_m, rel=0.02)

    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (1, 2, 0)
    fe = transformers.AutoFeatureExtractor.from_pretrained(hf_dir)
    assert isinstance(fe, transformers.Wav2Vec2FeatureExtractor)
    assert (fe.sampling_rate, fe.feature_size, fe.do_normalize) == (SAMPLE_RATE, 1, False)
    gen = model.generation_config
    assert (gen.decoder_start_token_id, gen.bos_token_id, gen.eos_token_id) == (1, 1, 2)


def _hf_run(model, audio: np.ndarray) -> tuple[np.ndarray, list[int]]:
    from transformers.models.moonshine.modeling_moonshine import MoonshineEncoderModelOutput

    with torch.inference_mode():
        values = torch.from_numpy(audio)[None]
        hidden = model.model.encoder(values).last_hidden_state
        # transformers 5.x wants the encoder output object here, not a tuple.
        out = model.generate(encoder_outputs=MoonshineEncoderModelOutput(last_hidden_state=hidden),
                             max_new_tokens=_max_tokens(audio), do_sample=False, num_beams=1)
    return hidden.numpy(), out[0].tolist()


def _strip(tokens: list[int]) -> list[int]:
    body = tokens[1:] if tokens and tokens[0] == 1 else tokens
    return body[: body.index(2)] if 2 in body else body


def test_fidelity_against_ort_graph(pair, moonshine_clips):
    model, runner, name = pair["model"], pair["ort"], pair["name"]
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.decoder_num_attention_heads
    tok = transformers.AutoTokenizer.from_pretrained(pair["hf_dir"])
    rows = []
    for clip, audio in moonshine_clips.items():
        ort_hidden = runner.encode(audio)
        hf_hidden, hf_tokens = _hf_run(model, audio)
        assert hf_hidden.shape == ort_hidden.shape
        rel = float(np.linalg.norm(hf_hidden - ort_hidden) / np.linalg.norm(ort_hidden))
        ort_tokens = _strip(runner.greedy(audio, ort_hidden, _max_tokens(audio),
                                          cfg.decoder_num_key_value_heads, head_dim))
        hf_tokens = _strip(hf_tokens)
        agree = next((i for i, (a, b) in enumerate(zip(hf_tokens, ort_tokens)) if a != b),
                     min(len(hf_tokens), len(ort_tokens)))
        rows.append(dict(clip=clip, rel=rel, same=hf_tokens == ort_tokens, prefix=agree, n_hf=len(hf_tokens),
                         n_ort=len(ort_tokens), hf=tok.decode(hf_tokens), ort=tok.decode(ort_tokens)))
    print(f"\n{name}:")
    for r in rows:
        print(f"  {r['clip']:13s} enc rel {r['rel']:.2e}  tokens {'same' if r['same'] else 'DIFF'} "
              f"(common prefix {r['prefix']}, hf {r['n_hf']}, ort {r['n_ort']})  {r['hf']!r}")
        if not r["same"]:
            print(f"  {'':13s} ort: {r['ort']!r}")

    assert max(r["rel"] for r in rows) < ENCODER_REL[name]
    assert any("fail better" in r["hf"].lower() for r in rows if r["clip"] == "beckett")
    if name == "moonshine-base":
        # fp32 compute on both sides: greedy decoding must not diverge anywhere.
        assert all(r["same"] for r in rows), [r["clip"] for r in rows if not r["same"]]
    else:
        # Activations are quantized inside the tiny graph, so exact agreement is not guaranteed (it was
        # 4/4 clips here; ORT's integer kernels differ across CPUs). Allow one divergent clip, and
        # everywhere demand agreement on most of the sequence (divergence, when it happens, comes late).
        same = sum(r["same"] for r in rows)
        assert same >= len(rows) - 1, rows
        assert all(r["prefix"] >= 0.5 * max(r["n_hf"], r["n_ort"]) for r in rows), rows
