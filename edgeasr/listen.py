"""`edgeasr-listen`: live transcription from the microphone, a file replayed as if it were one, or a server.

    edgeasr-listen --model moonshine-tiny                 # microphone, FP model (as an FP32 bundle)
    edgeasr-listen --model moonshine-tiny --method gptq --bits 4   # quantized and exported once, then cached
    edgeasr-listen --file talk.wav --fast --json          # one JSON event per line, as fast as possible

In a terminal the open line is rewritten in place and finished lines stay; Ctrl-C stops the input,
completes the open line (locally, or by waiting for the server's finals) and exits 0; a second Ctrl-C
quits at once (exit 130). Exit code 2 means a usage problem, e.g. no microphone.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from edgeasr.errors import EdgeASRError
from edgeasr.protocol import dumps

log = logging.getLogger("edgeasr.listen")


def build_parser() -> argparse.ArgumentParser:
    from edgeasr.resolver import ENGINES, ResolveOptions
    from edgeasr.stream.session import SessionOptions
    from edgeasr.stream.turn import END_OF_TURN_MODES, TurnOptions
    from edgeasr.stream.vad import VAD_KINDS, VADOptions

    p = argparse.ArgumentParser(prog="edgeasr-listen", description=__doc__.splitlines()[0])
    model = p.add_mutually_exclusive_group()
    model.add_argument("--model", default="moonshine-tiny", help="zoo name, transformers dir or Hub id")
    model.add_argument("--recipe", type=Path, help="recipe file: a .toml path or the name of a shipped recipe")
    model.add_argument("--checkpoint", type=Path, help="quantized checkpoint made by `edgeasr quantize`")
    model.add_argument("--bundle", type=Path, help="bundle directory or .edgeasr.tar made by `edgeasr export`")
    p.add_argument("--method", help="quantize --model with this method on first use (e.g. rtn, gptq, awq)")
    p.add_argument("--bits", type=int, default=4, help="weight bits for --method (default 4)")
    p.add_argument("--a-bits", type=int, default=16, help="activation bits for --method (default 16)")
    p.add_argument("--group-size", type=int, default=64, help="weight group size for --method (0 = per channel)")
    p.add_argument("--engine", choices=ENGINES, default=ResolveOptions.engine,
                   help="bundle: packed ONNX bundle (exported on first use); torch: the transformers fake-quant "
                        "model; auto (default): the bundle wherever one can represent the recipe")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--file", type=Path, help="replay this audio file as if it were the microphone")
    source.add_argument("--device", help="input device index or name substring (see --list-devices)")
    source.add_argument("--list-devices", action="store_true", help="list input devices and exit")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--realtime", dest="realtime", action="store_true", default=True,
                      help="replay --file at real-time speed (default)")
    pace.add_argument("--fast", dest="realtime", action="store_false", help="replay --file as fast as possible")
    p.add_argument("--vad-aggressiveness", type=int, choices=range(4), default=VADOptions.aggressiveness,
                   help=f"webrtcvad mode 0-3 (default {VADOptions.aggressiveness})")
    p.add_argument("--vad", choices=VAD_KINDS,
                   help="webrtc: webrtcvad alone; silero: a frame is speech only when Silero VAD agrees (no words "
                        "invented on radio static) (default webrtc; with --server, the server's default)")
    p.add_argument("--partial-interval", type=float, default=SessionOptions.partial_interval,
                   help=f"seconds of audio between partial updates (default {SessionOptions.partial_interval})")
    p.add_argument("--no-partials", action="store_true", help="print final lines only")
    p.add_argument("--end-of-turn", choices=END_OF_TURN_MODES,
                   help=f"smart: Smart Turn ends a line at a {TurnOptions.pause_ms} ms pause when the sentence sounds "
                        f"finished; vad: only the {VADOptions.hangover_ms} ms VAD hangover (default {TurnOptions.mode}; "
                        "with --server, the server's default)")
    p.add_argument("--json", action="store_true", help="one JSON event per line on stdout")
    p.add_argument("--server", metavar="URL", help="stream to an edgeasr-server (ws://host:port/v1/stream)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _device(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isdigit() else value


def _target(args: argparse.Namespace):
    """What to run, for `edgeasr.resolver`: an explicit bundle / checkpoint / recipe file, else --model (+ --method)."""
    from edgeasr.quant.recipe import Recipe
    from edgeasr.resolver import recipe_target

    if args.bundle or args.checkpoint:
        return args.bundle or args.checkpoint
    if args.recipe:
        return Recipe.from_toml(args.recipe)
    return recipe_target(args.model, args.method, args.bits, args.a_bits, args.group_size)


class Printer:
    """Writes events: JSON lines, or a terminal view with the open line rewritten in place."""

    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json
        self.live = out.isatty()

    def show(self, event: dict) -> None:
        if self.as_json:
            self.out.write(dumps(event) + "\n")
        elif event["type"] == "LineCompleted":
            self._rewrite(event["text"])
            self.out.write("\n")
        elif self.live:
            # Only the tail fits on one terminal row; a wrapped line could not be rewritten with \r.
            width = shutil.get_terminal_size().columns - 1
            self._rewrite(event["text"][-width:])
        self.out.flush()

    def _rewrite(self, text: str) -> None:
        self.out.write(("\r\x1b[2K" if self.live else "") + text)


class StopOnInterrupt:
    """First Ctrl-C ends the input so the open line can be completed; a second one raises KeyboardInterrupt.

    A handler instead of catching KeyboardInterrupt: the exception would land wherever the main thread
    happens to be (inside the client's event generator, say) and kill what still has to deliver the finals.
    """

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self._previous = None

    def __enter__(self) -> "StopOnInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        if self.stopped.is_set():
            raise KeyboardInterrupt
        self.stopped.set()
        print("stopping: completing the open line (Ctrl-C again to quit now)", file=sys.stderr)

    def until_stopped(self, chunks: Iterable) -> Iterator:
        for chunk in chunks:
            if self.stopped.is_set():
                return
            yield chunk


def _listen_local(args: argparse.Namespace, chunks: Iterable, printer: Printer) -> None:
    from edgeasr.resolver import ResolveOptions, resolve
    from edgeasr.stream.session import SessionOptions, StreamingSession
    from edgeasr.stream.turn import TurnOptions
    from edgeasr.stream.vad import VADOptions

    engine = resolve(_target(args), ResolveOptions(engine=args.engine))
    log.info("running %s on the %s engine", engine.name, engine.kind)
    options = SessionOptions(vad=VADOptions(aggressiveness=args.vad_aggressiveness, kind=args.vad or VADOptions.kind),
                             partial_interval=args.partial_interval, partials=not args.no_partials,
                             turn=TurnOptions(mode=args.end_of_turn or TurnOptions.mode))
    session = StreamingSession(engine, options)
    for chunk in chunks:
        for event in session.accept(chunk):
            printer.show(event.to_dict())
    for event in session.finish():
        printer.show(event.to_dict())


def _server_target(args: argparse.Namespace) -> dict:
    """What the server should run, in `edgeasr.client.ClientOptions` fields."""
    if args.bundle or args.recipe:
        raise EdgeASRError("--bundle and --recipe run locally only; a server serves zoo models, recipes given as "
                           "--model/--method/--bits and cached checkpoints")
    if args.checkpoint:
        return {"checkpoint": args.checkpoint.name}
    if args.method:
        return {"recipe": {"model": args.model, "method": args.method, "w_bits": args.bits, "a_bits": args.a_bits,
                           "group_size": args.group_size}}
    return {"model": args.model}


def _listen_server(args: argparse.Namespace, chunks: Iterable, printer: Printer) -> None:
    from edgeasr.client import stream

    # The source paces itself (microphone, or --file at real-time speed): the client sends as it yields.
    # --fast sends faster than real time: ask the server to block (TCP backpressure) instead of dropping audio.
    overflow = "block" if args.file and not args.realtime else "drop"
    # When the chunks run out (end of file, or Ctrl-C) the client sends `end` and reads on until the
    # server's summary, so the open line's final still arrives.
    events = stream(args.server, chunks, 16000, partials=not args.no_partials, realtime=False,
                    overflow=overflow, end_of_turn=args.end_of_turn, vad=args.vad, **_server_target(args))
    # `stream` raises (exit 2) when the connection ends before the server's summary: never a quiet early end.
    for event in events:
        if event.get("type", "").startswith("Line"):
            printer.show(event)
        elif event.get("type") == "summary" and event.get("dropped_seconds"):
            log.warning("the server dropped %.1f s of audio it could not decode in time", event["dropped_seconds"])


def run(args: argparse.Namespace) -> int:
    from edgeasr.stream.sources import FileSource, MicSource, list_input_devices

    if args.list_devices:
        devices = list_input_devices()
        for d in devices:
            print(f"{d['index']:3}  {d['name']}  ({d['channels']} ch, {d['sample_rate']:.0f} Hz)")
        if not devices:
            print("no input devices found", file=sys.stderr)
        return 0
    printer = Printer(sys.stdout, args.json)
    listen = _listen_server if args.server else _listen_local
    with StopOnInterrupt() as interrupt:
        if args.file:
            listen(args, interrupt.until_stopped(FileSource(args.file, realtime=args.realtime)), printer)
        else:
            with MicSource(_device(args.device)) as mic:
                if not args.json:
                    print("listening (Ctrl-C to stop)", file=sys.stderr)
                listen(args, interrupt.until_stopped(mic), printer)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except EdgeASRError as exc:
        print(f"edgeasr-listen: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the input was opened: quit without completing
        return 130


if __name__ == "__main__":
    sys.exit(main())
