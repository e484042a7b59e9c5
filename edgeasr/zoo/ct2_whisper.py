"""Rebuild a `transformers` Whisper directory from a faster-whisper / CTranslate2 model.

The registries hold Whisper only as CTranslate2 `model.bin` files (float16). CTranslate2's Python API
gives no access to the tensors, so the file is parsed here and mapped onto
`WhisperForConditionalGeneration`; the weights are widened to fp32 (the "FP" baseline is therefore
fp16 widened to fp32). The config is derived from the tensor shapes, the special token ids from the
package's own tokenizer.json, and suppress / alignment lists from the CTranslate2 config.json.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

# CTranslate2 dtype codes (model.bin v6): the weights are f16, flags and head counts small ints.
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BF16 = 5
_HEAD_DIM = 64  # every Whisper size uses 64-dim heads; used only when the file lacks num_heads


def _read(f: BinaryIO, fmt: str) -> tuple:
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("model.bin is truncated")
    return struct.unpack("<" + fmt, data)


def _read_string(f: BinaryIO) -> str:
    (length,) = _read(f, "H")  # length counts the trailing NUL
    return f.read(length)[:-1].decode("utf-8")


def read_ct2_model(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """Parse a CTranslate2 model.bin (format v6) into (spec name, {variable name: array}).

    Aliases (e.g. decoder/projection/weight -> decoder/embeddings/weight) are resolved to the same array.
    """
    variables: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        (version,) = _read(f, "I")
        if version != 6:
            raise ValueError(f"{path}: CTranslate2 model.bin version {version} is not supported (expected 6)")
        spec = _read_string(f)
        _read(f, "I")  # spec revision
        (count,) = _read(f, "I")
        for _ in range(count):
            name = _read_string(f)
            (rank,) = _read(f, "B")
            shape = _read(f, "I" * rank)
            (dtype,) = _read(f, "B")
            (nbytes,) = _read(f, "I")
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise ValueError(f"{path} is truncated inside {name} (a missing part of a split file?)")
            if dtype == _BF16:  # bf16 is the top half of an f32
                arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif dtype in _CT2_DTYPES:
                arr = np.frombuffer(raw, _CT2_DTYPES[dtype])
            else:
                raise ValueError(f"{path}: unknown dtype code {dtype} for {name}")
            variables[name] = arr.reshape(shape)
        (n_alias,) = _read(f, "I")
        for _ in range(n_alias):
            alias, target = _read_string(f), _read_string(f)
            variables[alias] = variables[target]
        if f.read(1):
            raise ValueError(f"{path} has trailing bytes after the alias table")
    return spec, variables


def _count_layers(variables: dict[str, np.ndarray], stack: str) -> int:
    # Match "layer_<n>/" only: the bare prefix "layer_" also matches "<stack>/layer_norm".
    ids = {int(k.split("/")[1][len("layer_"):]) for k in variables
           if k.startswith(f"{stack}/layer_") and k.split("/")[1][len("layer_"):].isdigit()}
    if ids != set(range(len(ids))):
        raise ValueError(f"{stack} layers are not numbered 0..n-1: {sorted(ids)}")
    return len(ids)


def _heads(variables: dict[str, np.ndarray], stack: str, d_model: int) -> int:
    stored = variables.get(f"{stack}/num_heads")
    return int(stored) if stored is not None else d_model // _HEAD_DIM


def _state_dict(v: dict[str, np.ndarray], n_enc: int, n_dec: int) -> dict[str, np.ndarray]:
    """Map CTranslate2 variable names onto WhisperForConditionalGeneration's (fp32 numpy arrays)."""
    sd: dict[str, np.ndarray] = {}

    def put(hf: str, ct2: str) -> None:
        sd[hf] = v[ct2]

    def linear(hf: str, ct2: str) -> None:
        put(f"{hf}.weight", f"{ct2}/weight")
        put(f"{hf}.bias", f"{ct2}/bias")

    def norm(hf: str, ct2: str) -> None:
        put(f"{hf}.weight", f"{ct2}/gamma")
        put(f"{hf}.bias", f"{ct2}/beta")

    def fused_qkv(hf: str, ct2: str, parts: tuple[str, ...]) -> None:
        # CT2 fuses projections along the output dim; HF's k_proj has no bias, CT2 stores zeros for it.
        weights = np.split(v[f"{ct2}/weight"], len(parts), axis=0)
        biases = np.split(v[f"{ct2}/bias"], len(parts), axis=0)
        for part, w, b in zip(parts, weights, biases):
            sd[f"{hf}.{part}.weight"] = w
            if part == "k_proj":
                if np.any(b != 0):
                    raise ValueError(f"{ct2}: non-zero key bias cannot be represented in transformers Whisper")
            else:
                sd[f"{hf}.{part}.bias"] = b

    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        linear(f"{enc}.{conv}", f"encoder/{conv}")
    put(f"{enc}.embed_positions.weight", "encoder/position_encodings/encodings")
    norm(f"{enc}.layer_norm", "encoder/layer_norm")
    for i in range(n_enc):
        hf, ct = f"{enc}.layers.{i}", f"encoder/layer_{i}"
        fused_qkv(f"{hf}.self_attn", f"{ct}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
        linear(f"{hf}.fc1", f"{ct}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")

    # proj_out is tied to embed_tokens in transformers (CT2 stores it as an alias): not written.
    put(f"{dec}.embed_tokens.weight", "decoder/embeddings/weight")
    put(f"{dec}.embed_positions.weight", "decoder/position_encodings/encodings")
    norm(f"{dec}.layer_norm", "decoder/layer_norm")
    for i in range(n_dec):
        hf, ct = f"{dec}.layers.{i}", f"decoder/layer_{i}"
        fused_qkv(f"{hf}.self_attn", f"{ct}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
        linear(f"{hf}.encoder_attn.q_proj", f"{ct}/attention/linear_0")
        fused_qkv(f"{hf}.encoder_attn", f"{ct}/attention/linear_1", ("k_proj", "v_proj"))
        linear(f"{hf}.encoder_attn.out_proj", f"{ct}/attention/linear_2")
        norm(f"{hf}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm")
        linear(f"{hf}.fc1", f"{ct}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")
    return {k: np.ascontiguousarray(a, dtype=np.float32) for k, a in sd.items()}


def _special_ids(tokenizer_json: Path) -> dict[str, int]:
    """Special token -> id, read from the package's tokenizer (ids shift by one between .en and multilingual)."""
    added = json.loads(tokenizer_json.read_text(encoding="utf-8"))["added_tokens"]
    return {t["content"]: t["id"] for t in added if t.get("special")}


def convert_ct2_whisper(ct2_dir: Path, out_dir: Path) -> None:
    """Write a complete offline `transformers` Whisper directory into `out_dir` from CTranslate2 files.

    `ct2_dir` holds model.bin, config.json, tokenizer.json (vocabulary.txt is not needed). The model
    is loaded strictly before saving, so a mapping gap fails here rather than at first use.
    """
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    spec, v = read_ct2_model(ct2_dir / "model.bin")
    if spec != "WhisperSpec":
        raise ValueError(f"{ct2_dir / 'model.bin'} holds a {spec}, not a Whisper model")
    ct2_config = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8"))
    special = _special_ids(ct2_dir / "tokenizer.json")

    vocab_size, d_model = v["decoder/embeddings/weight"].shape
    # Whisper's vocabularies: 51864 for the .en models, 51865 (51866 for large-v3) multilingual.
    multilingual = vocab_size >= 51865
    if not multilingual and vocab_size != 51864:
        raise ValueError(f"unexpected Whisper vocabulary size {vocab_size}")
    eot, sot = special["<|endoftext|>"], special["<|startoftranscript|>"]
    if eot != (50257 if multilingual else 50256):
        raise ValueError(f"tokenizer.json (<|endoftext|> = {eot}) does not match the model's vocabulary {vocab_size}")
    n_enc, n_dec = _count_layers(v, "encoder"), _count_layers(v, "decoder")

    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=v["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=_heads(v, "encoder", d_model),
        decoder_attention_heads=_heads(v, "decoder", d_model),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        begin_suppress_tokens=list(ct2_config["suppress_ids_begin"]),
        suppress_tokens=list(ct2_config["suppress_ids"]),
    )

    state = {k: torch.from_numpy(a) for k, a in _state_dict(v, n_enc, n_dec).items()}
    model = WhisperForConditionalGeneration(config)
    result = model.load_state_dict(state, strict=False)
    tied = {"proj_out.weight"}
    if result.unexpected_keys or set(result.missing_keys) - tied:
        raise ValueError(f"weight mapping incomplete: missing {sorted(set(result.missing_keys) - tied)}, "
                         f"unexpected {sorted(result.unexpected_keys)}")
    model.tie_weights()
    if model.proj_out.weight.data_ptr() != model.model.decoder.embed_tokens.weight.data_ptr():
        raise ValueError("proj_out is not tied to embed_tokens")
    model.save_pretrained(out_dir)  # safetensors, fp32

    generation = GenerationConfig(
        max_length=config.max_target_positions,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        no_timestamps_token_id=special["<|notimestamps|>"],
        prev_sot_token_id=special["<|startofprev|>"],
        suppress_tokens=list(ct2_config["suppress_ids"]),
        begin_suppress_tokens=list(ct2_config["suppress_ids_begin"]),
        alignment_heads=[list(h) for h in ct2_config.get("alignment_heads", [])],
        max_initial_timestamp_index=50,
        return_timestamps=False,
        is_multilingual=multilingual,
    )
    if multilingual:
        # CT2's lang_ids are right for multilingual models only (for .en they are off by one).
        names = {i: tok for tok, i in special.items()}
        generation.lang_to_id = {names[i]: i for i in ct2_config["lang_ids"]}
        if not all(t[2:-2] in LANGUAGES for t in generation.lang_to_id):
            raise ValueError("CT2 lang_ids do not point at language tokens in tokenizer.json")
        generation.task_to_id = {"transcribe": special["<|transcribe|>"], "translate": special["<|translate|>"]}
    generation.save_pretrained(out_dir)

    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out_dir)
    _write_tokenizer(ct2_dir / "tokenizer.json", out_dir, special)


def _write_tokenizer(tokenizer_json: Path, out_dir: Path, special: dict[str, int]) -> None:
    """Copy tokenizer.json as it is and add the config WhisperTokenizer needs.

    The special tokens are listed as extra special tokens because WhisperTokenizer finds the first
    timestamp id as `all_special_ids[-1] + 1`; without the list it would be <|endoftext|> + 1.
    """
    shutil.copy(tokenizer_json, out_dir / "tokenizer.json")
    ordered = [tok for tok, _ in sorted(special.items(), key=lambda kv: kv[1])]
    eot = "<|endoftext|>"
    tokenizer_config = {
        "tokenizer_class": "WhisperTokenizer",
        "add_prefix_space": False,
        "bos_token": eot,
        "eos_token": eot,
        "unk_token": eot,
        "pad_token": eot,
        "extra_special_tokens": [t for t in ordered if t != eot],
        "model_max_length": 1024,  # as in the published Whisper tokenizers
        "errors": "replace",
        "language": None,
        "task": None,
        "predict_timestamps": False,
        "processor_class": "WhisperProcessor",
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    special_map = {"bos_token": eot, "eos_token": eot, "unk_token": eot, "pad_token": eot,
                   "additional_special_tokens": tokenizer_config["extra_special_tokens"]}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
