"""One calibration pipeline: real audio through the model, block by block.

`walk_blocks` captures what enters the first encoder block for every calibration clip, hands each block
and its inputs to the method, then runs the (now quantized) block to produce the next block's inputs, so
every block is calibrated on what the already-quantized model really feeds it. The decoder is captured
after the encoder is done, teacher-forced on the clips' reference text (greedy tokens when a clip has
no text), so its cross-attention sees the quantized encoder's output.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from edgeasr.errors import DatasetError
from edgeasr.quant.arch import ArchGraph, BlockGraph
from edgeasr.quant.recipe import CalibrationOptions

log = logging.getLogger(__name__)

@dataclass
class BlockInput:
    """One block call on one calibration clip: the hidden states plus whatever else the block was given."""

    hidden: torch.Tensor
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def call(self, block: nn.Module, hidden: torch.Tensor | None = None):
        return block(self.hidden if hidden is None else hidden, *self.args, **self.kwargs)


@dataclass
class CalibrationClip:
    """One calibration sequence: `utterances` clips of the set joined with short pauses."""

    audio: np.ndarray
    text: str | None
    utterances: int = 1


@dataclass
class BlockContext:
    """What a method sees of one block while it is being quantized."""

    part: str
    index: int
    name: str
    block: nn.Module
    graph: BlockGraph
    inputs: list[BlockInput]
    arch: ArchGraph
    extras: dict = field(default_factory=dict)

    def linear(self, path: str) -> nn.Module:
        return self.block.get_submodule(path)

    def run(self) -> list[torch.Tensor]:
        """Outputs of the block (as it is now) on every calibration input."""
        return block_outputs(self.block, self.inputs)


SEQUENCE_MAX_SECONDS = 28.0
"""Longest joined sequence: Whisper's encoder window is 30 s, and audio past it would be cut while its
text is still teacher-forced."""
PAUSE_SECONDS = 0.3


def load_calibration_clips(options: CalibrationOptions) -> list[CalibrationClip]:
    """`options.n_clips` sequences, each up to `options.concat` utterances of the set joined with pauses
    (fewer when the next one would pass `SEQUENCE_MAX_SECONDS`)."""
    from edgeasr.audio import prepare_audio
    from edgeasr.data.manifest import load_manifest

    utterances = load_manifest(options.dataset)
    if not utterances:
        raise DatasetError(f"calibration set {options.dataset} is empty")
    rng = random.Random(options.seed)
    chosen = rng.sample(utterances, min(options.n_clips * options.concat, len(utterances)))
    groups: list[list] = []
    for utt in chosen:
        group = groups[-1] if groups else None
        if (group is None or len(group) == options.concat
                or sum(u.seconds + PAUSE_SECONDS for u in group) + utt.seconds > SEQUENCE_MAX_SECONDS):
            if len(groups) == options.n_clips:
                break
            groups.append([])
        groups[-1].append(utt)
    pause = np.zeros(int(PAUSE_SECONDS * 16000), dtype=np.float32)
    clips = []
    for group in groups:
        audio = np.concatenate([part for u in group for part in (prepare_audio(u.audio), pause)])
        texts = [u.text for u in group]
        clips.append(CalibrationClip(audio, " ".join(texts) if all(texts) else None, len(group)))
    seconds = sum(c.audio.size for c in clips) / 16000
    log.info("calibration: %d sequences of up to %d joined utterances (%d utterances, %.0f s of audio) from %s",
             len(clips), options.concat, sum(c.utterances for c in clips), seconds, options.dataset)
    return clips


class _Captured(Exception):
    pass


@contextlib.contextmanager
def _capture_first_block(block: nn.Module, store: list[BlockInput]) -> Iterator[None]:
    def hook(_module, args, kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k not in ("cache", "past_key_values", "use_cache")}
        hidden = args[0] if args else kwargs.pop("hidden_states")
        store.append(BlockInput(hidden.detach(), tuple(args[1:]), kwargs))
        raise _Captured

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _hidden(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


@torch.inference_mode()
def block_outputs(block: nn.Module, inputs: list[BlockInput]) -> list[torch.Tensor]:
    return [_hidden(item.call(block)) for item in inputs]


@contextlib.contextmanager
def hook_linear_inputs(block: nn.Module, paths: list[str] | tuple[str, ...],
                       fn: Callable[[str, torch.Tensor], None]) -> Iterator[None]:
    """Call `fn(path, x)` with each named linear's input, flattened to [tokens, in_features]."""
    handles = []
    for path in paths:
        def hook(_module, args, path=path):
            x = args[0]
            fn(path, x.detach().reshape(-1, x.shape[-1]).float())
        handles.append(block.get_submodule(path).register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def decoder_ids(backend, clip: CalibrationClip, encoded, max_tokens: int) -> list[int]:
    """Prompt + the clip's text (the FP model's greedy tokens when it has none) + end, at most `max_tokens`."""
    prompt = list(backend.settings.prompt)
    if clip.text:
        text_ids = backend.tokenizer(" " + clip.text.strip() if backend.family == "whisper" else clip.text,
                                     add_special_tokens=False).input_ids
    else:
        text_ids = backend.decode(encoded, max_tokens).tokens
    return (prompt + text_ids + [backend.settings.eos_id])[:max_tokens]


@torch.inference_mode()
def capture_inputs(backend, arch: ArchGraph, part: str, clips: list[CalibrationClip],
                   options: CalibrationOptions) -> list[BlockInput]:
    """What enters block 0 of `part` for each clip (running the model up to there)."""
    model = backend.model
    first = arch.blocks(model, part)[0]
    store: list[BlockInput] = []
    for clip in clips:
        with _capture_first_block(first, store):
            try:
                if part == "encoder":
                    backend.encode(clip.audio)
                else:
                    encoded = backend.encode(clip.audio)
                    ids = decoder_ids(backend, clip, encoded, options.max_decoder_tokens)
                    model(encoder_outputs=encoded, decoder_input_ids=torch.tensor([ids]), use_cache=False)
            except _Captured:
                continue
        raise RuntimeError(f"block 0 of the {part} was never reached while capturing calibration inputs")
    return store


def walk_blocks(backend, arch: ArchGraph, parts: tuple[str, ...], clips: list[CalibrationClip],
                options: CalibrationOptions, process: Callable[[BlockContext], None], desc: str) -> None:
    """Quantize block after block; each block gets the outputs of the already-quantized previous one."""
    model = backend.model
    total = sum(len(arch.blocks(model, p)) for p in parts)
    with tqdm(total=total, desc=desc, unit="block") as bar:
        for part in parts:
            inputs = capture_inputs(backend, arch, part, clips, options)
            for index, block in enumerate(arch.blocks(model, part)):
                name = f"{arch.encoder_blocks if part == 'encoder' else arch.decoder_blocks}.{index}"
                process(BlockContext(part, index, name, block, arch.block_graph(part), inputs, arch))
                outputs = block_outputs(block, inputs)
                inputs = [BlockInput(out, item.args, item.kwargs) for out, item in zip(outputs, inputs)]
                bar.update(1)
