"""QuaRot: the rotation is exact in FP and makes 4-bit activations (and weights) far less lossy than RTN."""

from __future__ import annotations

import pytest
import torch

from edgeasr.backends.hf import HFBackend
from edgeasr.engine import Engine
from edgeasr.errors import QuantizationError
from edgeasr.quant.arch import graph_for
from edgeasr.quant.layers import QuantLinear
from edgeasr.quant.methods.quarot import rotate_fp
from edgeasr.registry import fetch_package, find_file
from edgeasr.zoo import fetch
from edgeasr.zoo.catalog import MOONSHINE_VOICE
from quant_support import fp_backend, held_out_clips, output_error, quantized

MODEL = "moonshine-tiny"


@pytest.mark.parametrize("fold", [False, True])
@torch.inference_mode()
def test_rotation_is_exact_in_fp(fold):
    fp = fp_backend(MODEL)
    rotated = HFBackend.from_pretrained(fetch(MODEL))
    rotate_fp(rotated.model, graph_for(rotated.model), fold=fold)
    clip = held_out_clips(1)[0]
    enc_ref, enc_rot = fp.encode(clip.audio), rotated.encode(clip.audio)
    ids = torch.tensor([list(fp.settings.prompt) + fp.tokenizer(" " + clip.text, add_special_tokens=False).input_ids])
    ref = fp.model(encoder_outputs=enc_ref, decoder_input_ids=ids, use_cache=False).logits
    rot = rotated.model(encoder_outputs=enc_rot, decoder_input_ids=ids, use_cache=False).logits
    assert float((rot - ref).norm() / ref.norm()) < 1e-3
    rel_enc = (enc_rot.last_hidden_state - enc_ref.last_hidden_state).norm() / enc_ref.last_hidden_state.norm()
    assert float(rel_enc) < 1e-3


@pytest.mark.parametrize("a_bits", [8, 4])
def test_w4_activation_quant_beats_rtn(a_bits):
    fp = fp_backend(MODEL)
    q = quantized(MODEL, "quarot", 4, a_bits)
    layers = [m for m in q.model.modules() if isinstance(m, QuantLinear)]
    assert layers and all(m.hadamard for m in layers)
    err_quarot = output_error(fp, q)
    err_rtn = output_error(fp, quantized(MODEL, "rtn", 4, a_bits))
    assert err_quarot < (0.9 if a_bits == 8 else 0.7) * err_rtn, (err_quarot, err_rtn)


def test_unsupported_options_are_refused():
    with pytest.raises(QuantizationError, match="rtn.*gptq"):
        quantized(MODEL, "quarot", 4, 8, weight_method="awq")


def test_w8a8_keeps_beckett_transcript():
    beckett = find_file(fetch_package(MOONSHINE_VOICE), "assets/beckett.wav")
    reference = Engine(fp_backend(MODEL), "fp").transcribe(beckett).text
    assert Engine(quantized(MODEL, "quarot", 8, 8), "quarot-w8a8").transcribe(beckett).text == reference
