"""`edgeasr bench server`: how many real-time streams one server sustains, and whether memory stays flat.

A server subprocess (loopback only, optionally pinned to a few cores with `taskset`) serves one model,
on the engine `edgeasr.resolver` picks (the packed bundle by default: quantized and exported here first,
so no timing includes it; `--engine torch` for the fake-quant model); N clients in this process replay
real speech at real-time speed, with staggered starts, each from its own point of the looped speech
(`phases="spread"`: independent users, whose sentences do not end together; "aligned" replays the same
audio from the start on every client, so all of them end their lines within the 2 s stagger: a burst, not
a steady load). A step passes when no client lost audio and the
95th percentile of end-of-speech → final latency is under the budget; N grows until a step fails.
Latency is measured on the client: from sending the frame that holds the end of speech to receiving the
final. A soak then runs the largest passing N (or a given N)
for minutes and samples the server's resident memory. The report says whether the goal holds: at least
`goal_clients` clients pass, and the soak keeps p95 under the budget, drops nothing and grows its RSS by
at most `max_rss_growth_pct` from the second minute to the last (medians of 5 s samples).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeasr.audio import SAMPLE_RATE
from edgeasr.bench import flood
from edgeasr.bench.cell import scrub  # result files are shared: no machine paths in them

log = logging.getLogger(__name__)

PHASES = ("spread", "aligned")


@dataclass
class ServerBenchOptions:
    """What the server benchmark runs."""

    targets: tuple[str, ...] = ("moonshine-tiny:rtn:4", "moonshine-tiny:rtn:8")
    """Zoo names, MODEL:METHOD:W_BITS[:A_BITS[:GROUP_SIZE]] recipes, checkpoints or bundles (edgeasr.resolver)."""
    engine: str = "auto"
    """Engine the server runs: auto (the bundle wherever one represents the recipe), bundle or torch."""
    clients: tuple[int, ...] = (1, 2, 4, 6, 8, 10, 12, 16)
    """Concurrent client counts tried in order until one fails."""
    cores: int = 2
    """Cores the server is pinned to (taskset); 0 = no pinning."""
    workers: int = 0
    """Server decode threads (0 = one per pinned core)."""
    threads: int = 0
    """Intra-op threads per decode (0 = the server's default, cores // workers)."""
    stream_seconds: float = 22.0
    """Audio each client replays per step (real speech, looped)."""
    latency_budget_ms: float = 1000.0
    """p95 end-of-speech → final must stay below this."""
    partials: bool = True
    """Clients ask for partials (live captions), which costs decodes."""
    phases: str = "spread"
    """Where each client starts in the looped speech: "spread" (client i at i/N of it: independent users) or
    "aligned" (all at its start, 2 s apart: every client ends each line in the same 2 s, a burst)."""
    client_config: tuple[str, ...] = ()
    """Extra KEY=VALUE fields (JSON values) of every client's config message, e.g. end_of_turn="smart"."""
    soak_minutes: float = 10.0
    """Length of the soak (0 = skip)."""
    soak_target: str = "moonshine-tiny:rtn:4"
    """Model of the soak."""
    soak_clients: int = 0
    """Clients of the soak; 0 = the largest passing N of the soak target's ladder (at least 1)."""
    goal_clients: int = 8
    """Clients the capacity goal asks for (issue 18)."""
    max_rss_growth_pct: float = 5.0
    """Largest RSS growth after the soak's first minute the goal allows."""
    out: Path = Path("bench/results")
    """Folder for server_bench.json and server_bench.md."""
    flood_seconds: float = 60.0
    """Audio each client of the flood test sends as fast as it can, per overflow mode (0 = skip; bench/flood.py)."""


def _speech() -> np.ndarray:
    """Beckett and the first sentences of A Tale of Two Cities with pauses: several lines per replay."""
    from edgeasr.audio import prepare_audio
    from edgeasr.registry import fetch_package, find_file
    from edgeasr.zoo.catalog import MOONSHINE_VOICE

    root = fetch_package(MOONSHINE_VOICE)
    gap = np.zeros(SAMPLE_RATE, np.float32)
    beckett = prepare_audio(find_file(root, "assets/beckett.wav"))
    cities = prepare_audio(find_file(root, "assets/two_cities.wav"))[: 12 * SAMPLE_RATE]
    return np.concatenate([beckett, gap, cities, gap])


# -- server process ---------------------------------------------------------------------------------

class ServerProcess:
    """`edgeasr-server` on 127.0.0.1 in a subprocess; bounded start-up wait."""

    def __init__(self, target: str, max_clients: int, options: "ServerBenchOptions") -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.token = secrets.token_hex(8)
        self.target = target
        # --model takes recipes too (the resolver parses MODEL:METHOD:W_BITS), and loads nothing else.
        flag = ["--model", target]
        cores = options.cores
        workers = options.workers or max(1, cores or os.cpu_count() or 1)
        cmd = [sys.executable, "-m", "edgeasr.server.app", "--host", "127.0.0.1", "--port", str(self.port), *flag,
               "--engine", options.engine, "--no-lazy-zoo", "--max-clients", str(max_clients), "--workers",
               str(workers), "--threads", str(options.threads), "--idle-timeout", "30", "--log-level", "warning"]
        if cores and shutil.which("taskset") and (os.cpu_count() or 1) >= cores:
            cmd = ["taskset", "-c", f"0-{cores - 1}", *cmd]
        env = {**os.environ, "EDGEASR_SERVER_TOKEN": self.token}
        self.proc = subprocess.Popen(cmd, env=env)
        self._wait_ready(timeout=900)  # `prepare` built the bundle: loading it takes seconds

    def _wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError("server did not come up")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def _get(self, path: str) -> dict:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=10,
                         headers={"Authorization": f"Bearer {self.token}"}).json()

    def metrics(self) -> dict:
        return self._get("/metrics")

    def engine(self) -> dict:
        """What the server runs for the target: engine kind ("bundle" / "torch"), why, its name, threads."""
        models = self._get("/models")
        loaded = models["loaded"][self.target]
        return {"engine": loaded["engine"], "engine_reason": loaded["engine_reason"], "name": loaded["name"],
                "workers": models["workers"], "threads": models["threads"]}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


# -- clients ----------------------------------------------------------------------------------------

@dataclass
class ClientResult:
    latencies_ms: list[float] = field(default_factory=list)
    session_latencies_ms: list[float] = field(default_factory=list)
    """The server session's own end-of-speech → final (its real-time clock; excludes the network)."""
    ended_by: dict[str, int] = field(default_factory=dict)
    finals: int = 0
    dropped_seconds: float = 0.0
    late_seconds: float = 0.0
    error: str | None = None


async def _client(url: str, token: str, audio: np.ndarray, seconds: float, delay: float, offset: int,
                  partials: bool, extra: dict, chunk_ms: int = 100) -> ClientResult:
    """Replay `seconds` of looped audio from sample `offset` at real-time speed; time each final from the
    frame holding speech end."""
    from websockets.asyncio.client import connect

    from edgeasr.stream.session import SessionOptions

    pad_s = SessionOptions.final_pad_ms / 1000  # a final's `end` lies this far after the end of speech
    await asyncio.sleep(delay)
    result, step = ClientResult(), SAMPLE_RATE * chunk_ms // 1000
    total = int(seconds * SAMPLE_RATE)
    sent_at: list[tuple[int, float]] = []
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=60,
                       max_size=2**24) as ws:
        await ws.send(json.dumps({"sample_rate": SAMPLE_RATE, "encoding": "pcm16", "partials": partials, **extra}))

        async def send() -> None:
            start = time.perf_counter()
            for pos in range(0, total, step):
                await asyncio.sleep(max(0.0, start + pos / SAMPLE_RATE - time.perf_counter()))
                idx = (offset + np.arange(pos, min(pos + step, total))) % audio.size
                await ws.send((np.clip(audio[idx], -1, 1) * 32767).astype("<i2").tobytes())
                sent_at.append((min(pos + step, total), time.perf_counter()))
            await ws.send(json.dumps({"type": "end"}))

        sender = asyncio.create_task(send())
        deadline = time.monotonic() + seconds + 120
        while time.monotonic() < deadline:
            event = json.loads(await asyncio.wait_for(ws.recv(), max(1.0, deadline - time.monotonic())))
            kind = event["type"]
            if kind == "LineCompleted":
                now, speech_end = time.perf_counter(), int((event["end"] - pad_s) * SAMPLE_RATE)
                sent = next((t for end, t in sent_at if end >= speech_end), None)
                # A final forced by the end of the stream ends where the audio ends, not where speech did.
                if sent is not None and event["end"] < total / SAMPLE_RATE - 0.05:
                    result.latencies_ms.append(1000 * (now - sent))
                    result.session_latencies_ms.append(event.get("latency_ms", float("nan")))
                how = event.get("ended_by", "hangover")
                result.ended_by[how] = result.ended_by.get(how, 0) + 1
                result.finals += 1
            elif kind == "error":
                result.error = event["code"]
                break
            elif kind == "summary":
                result.dropped_seconds, result.late_seconds = event["dropped_seconds"], event["late_seconds"]
                break
        sender.cancel()
    return result


async def _run_clients(url: str, token: str, audio: np.ndarray, n: int, seconds: float,
                       options: "ServerBenchOptions") -> list[ClientResult]:
    # Staggered starts over 2 s: real users do not all stop talking in the same 30 ms frame.
    extra = _client_config(options.client_config)
    offsets = start_offsets(n, audio.size, options.phases)
    tasks = [_client(url, token, audio, seconds, 2.0 * i / n, offsets[i], options.partials, extra) for i in range(n)]
    return list(await asyncio.gather(*tasks))


def start_offsets(n: int, size: int, phases: str) -> list[int]:
    """Sample at which each of `n` clients starts in looped speech of `size` samples (see `ServerBenchOptions.phases`)."""
    if phases not in PHASES:
        raise SystemExit(f"phases must be one of {', '.join(PHASES)}; got {phases!r}")
    return [size * i // n if phases == "spread" else 0 for i in range(n)]


def _client_config(items: tuple[str, ...]) -> dict:
    """KEY=VALUE pairs → config fields; values are JSON (true, 0.5, "smart"), else taken as strings."""
    config = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--client-config wants KEY=VALUE, got {item!r}")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return config


def _step_summary(n: int, results: list[ClientResult], budget_ms: float, rss_mb: float) -> dict:
    latencies = [x for r in results for x in r.latencies_ms]
    p = (lambda q: round(float(np.percentile(latencies, q)), 1)) if latencies else (lambda q: None)
    dropped = round(sum(r.dropped_seconds for r in results), 2)
    errors = [r.error for r in results if r.error]
    p95 = p(95)
    session = [x for r in results for x in r.session_latencies_ms if x == x]
    ended_by: dict[str, int] = {}
    for r in results:
        for how, count in r.ended_by.items():
            ended_by[how] = ended_by.get(how, 0) + count
    return {"clients": n, "finals": sum(r.finals for r in results), "p50_ms": p(50), "p95_ms": p95,
            "session_p95_ms": round(float(np.percentile(session, 95)), 1) if session else None,
            "ended_by": ended_by,
            "max_ms": round(max(latencies), 1) if latencies else None, "dropped_seconds": dropped,
            "late_seconds": round(sum(r.late_seconds for r in results), 2), "errors": errors,
            "server_rss_mb": round(rss_mb, 1),
            "pass": not errors and dropped == 0 and p95 is not None and p95 < budget_ms}


def ladder(target: str, audio: np.ndarray, options: ServerBenchOptions) -> dict:
    server = ServerProcess(target, max(options.clients) + 1, options)
    steps = []
    try:
        engine = server.engine()
        log.info("%s runs on the %s engine", target, engine["engine"])
        asyncio.run(_run_clients(server.url, server.token, audio, 1, 4.0, options))  # warm-up
        for n in options.clients:
            results = asyncio.run(_run_clients(server.url, server.token, audio, n, options.stream_seconds, options))
            steps.append(_step_summary(n, results, options.latency_budget_ms, server.rss_mb()))
            log.info("%s N=%d: %s", target, n, steps[-1])
            if not steps[-1]["pass"]:
                break
        metrics = server.metrics()
    finally:
        server.stop()
    passing = [s["clients"] for s in steps if s["pass"]]
    return {"target": target, **engine, "max_clients": max(passing) if passing else 0, "steps": steps,
            "server_metrics": {k: metrics.get(k) for k in ("final_latency_ms", "decode_ms", "queue_ms",
                                                           "dropped_seconds")}}


def soak(target: str, n: int, audio: np.ndarray, options: ServerBenchOptions) -> dict:
    server = ServerProcess(target, n + 1, options)
    engine = server.engine()
    samples: list[tuple[float, float]] = []
    seconds = options.soak_minutes * 60

    async def sample_rss(start: float) -> None:
        while time.perf_counter() - start < seconds + 5:
            samples.append((round(time.perf_counter() - start, 1), round(server.rss_mb(), 1)))
            await asyncio.sleep(5)

    async def main() -> list[ClientResult]:
        start = time.perf_counter()
        sampler = asyncio.create_task(sample_rss(start))
        results = await _run_clients(server.url, server.token, audio, n, seconds, options)
        sampler.cancel()
        return results

    try:
        results = asyncio.run(main())
        samples.append((round(seconds, 1), round(server.rss_mb(), 1)))
    finally:
        server.stop()
    step = _step_summary(n, results, options.latency_budget_ms, samples[-1][1])
    return {"target": target, **engine, "clients": n, "minutes": options.soak_minutes, "rss_mb": samples,
            "rss_growth_pct": rss_growth_pct(samples), **{k: step[k] for k in
            ("finals", "p50_ms", "p95_ms", "session_p95_ms", "max_ms", "dropped_seconds", "errors", "ended_by")}}


def rss_growth_pct(samples: list[tuple[float, float]], minute: float = 60.0) -> float:
    """RSS growth from the second minute to the last one, each the median of its samples.

    The first minute is left out (the first connections fill allocator pools and caches), and medians
    rather than single samples: RSS swings by hundreds of MB within seconds as lines are decoded and
    their heap is released, so two single samples would measure the phase of that swing, not a leak.
    """
    end = samples[-1][0]
    second = [rss for t, rss in samples if minute <= t < 2 * minute] or [samples[0][1]]
    last = [rss for t, rss in samples if t >= max(minute, end - minute)] or [samples[-1][1]]
    base = float(np.median(second))
    return round(100 * (float(np.median(last)) - base) / base, 2)


def prepare(targets: list[str], engine: str) -> None:
    """Quantize and export every target's bundle before anything is timed (a server finds it in the cache)."""
    from edgeasr.quant.recipe import Recipe
    from edgeasr.resolver import ResolveOptions, bundle_limitation, bundle_path, parse_target

    for target in targets:
        parsed = parse_target(target)
        if engine != "torch" and not bundle_limitation(parsed if isinstance(parsed, Recipe) else None):
            bundle_path(parsed, ResolveOptions(engine=engine))


def goal(report: dict, options: ServerBenchOptions) -> dict:
    """Whether the capacity goal holds: `goal_clients` pass on the soak target, and its soak stays within
    the budget with nothing dropped and RSS growth after the first minute within the limit."""
    best = {r["target"]: r["max_clients"] for r in report["ladders"]}
    checks = {"clients": best.get(options.soak_target, 0) >= options.goal_clients}
    if "soak" in report:
        s = report["soak"]
        checks.update({"soak_clients": s["clients"] >= options.goal_clients,
                       "soak_p95": s["p95_ms"] is not None and s["p95_ms"] < options.latency_budget_ms,
                       "soak_dropped": s["dropped_seconds"] == 0 and not s["errors"],
                       "soak_rss": s["rss_growth_pct"] <= options.max_rss_growth_pct})
    return {"checks": checks, "met": all(checks.values()) and "soak" in report}


def run(options: ServerBenchOptions) -> dict:
    audio = _speech()
    prepare(list(dict.fromkeys([*options.targets, options.soak_target])), options.engine)
    report = {"options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
              "host": {"cpu_count": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
              "ladders": [ladder(t, audio, options) for t in options.targets]}
    best = {r["target"]: r["max_clients"] for r in report["ladders"]}
    if options.soak_minutes > 0:
        n = options.soak_clients or max(1, best.get(options.soak_target, max(best.values(), default=1)))
        report["soak"] = soak(options.soak_target, n, audio, options)
    report["goal"] = goal(report, options)
    if options.flood_seconds > 0:
        server = ServerProcess(options.targets[0], flood.FloodOptions.clients + 1, options)
        try:
            report["flood"] = flood.run(server.url, server.token, audio, flood.FloodOptions(options.flood_seconds))
        finally:
            server.stop()
    report["host"]["load_avg_at_end"] = os.getloadavg()
    return report


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "server_bench.json").write_text(scrub(json.dumps(report, indent=2)) + "\n")
    opts, host = report["options"], report["host"]
    config = ", ".join(opts["client_config"]) or "server defaults"
    lines = ["# Streaming server capacity", "",
             f"Server pinned to {opts['cores']} cores (`taskset`), engine `{opts['engine']}`, clients replaying real "
             f"speech at real-time speed on loopback, {opts['stream_seconds']} s per client per step, partials "
             f"{'on' if opts['partials'] else 'off'}, session config: {config}, client phases "
             f"`{opts.get('phases', 'aligned')}` (spread: each client from its own point of the speech; aligned: all "
             "from its start, 2 s apart, so their lines end together). "
             f"Pass: no dropped audio and p95 end-of-speech → final < {opts['latency_budget_ms']:.0f} ms "
             "(measured on the client, from sending the frame holding the end of speech; 'session p95' is the "
             "server session's own clock).",
             f"Host load average {host['load_avg_at_start'][0]:.1f} at start, {host['load_avg_at_end'][0]:.1f} at end "
             f"({host['cpu_count']} CPUs; above the core count means other jobs shared them: the latencies are "
             "then pessimistic).", "",
             "| model | engine | clients | finals | ended by | p50 ms | p95 ms | session p95 ms | max ms | dropped s | "
             "late s | server RSS MB | pass |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for ladder_ in report["ladders"]:
        for s in ladder_["steps"]:
            ended = ", ".join(f"{k} {v}" for k, v in sorted(s["ended_by"].items()))
            lines.append(f"| {ladder_['target']} | {ladder_['engine']} | {s['clients']} | {s['finals']} | {ended} | "
                         f"{s['p50_ms']} | {s['p95_ms']} | {s['session_p95_ms']} | {s['max_ms']} | "
                         f"{s['dropped_seconds']} | {s['late_seconds']} | {s['server_rss_mb']} | "
                         f"{'yes' if s['pass'] else 'no'} |")
    lines += ["", "Largest passing N: " + ", ".join(f"{r['target']} ({r['engine']}, {r['workers']} workers × "
                                                     f"{r['threads']} threads) **{r['max_clients']}**"
                                                     for r in report["ladders"])]
    if "soak" in report:
        s = report["soak"]
        lines += ["", f"## Soak: {s['target']} ({s['engine']}), {s['clients']} clients, {s['minutes']} min", "",
                  f"RSS {s['rss_mb'][0][1]} → {s['rss_mb'][-1][1]} MB (peak {max(r for _, r in s['rss_mb'])}); "
                  "growth from the second minute to the last (medians) "
                  f"**{s['rss_growth_pct']} %**; finals {s['finals']}, p95 {s['p95_ms']} ms (session "
                  f"{s['session_p95_ms']} ms), dropped {s['dropped_seconds']} s, errors {s['errors'] or 'none'}."]
    g = report["goal"]
    lines += ["", f"## Goal: ≥ {opts['goal_clients']} clients with p95 < {opts['latency_budget_ms']:.0f} ms, nothing "
              f"dropped, soak RSS growth ≤ {opts['max_rss_growth_pct']} %: **{'met' if g['met'] else 'not met'}**", "",
              ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in g["checks"].items())
              + ("" if "soak" in report else " (no soak run)")]
    if "flood" in report:
        lines += flood.markdown(report["flood"])
    (out / "server_bench.md").write_text(scrub("\n".join(lines)) + "\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edgeasr.resolver import ENGINES

    d = ServerBenchOptions()
    p.add_argument("--target", dest="targets", action="append",
                   help=f"model, MODEL:METHOD:W_BITS[:A_BITS[:GROUP_SIZE]], checkpoint or bundle; repeatable "
                        f"(default {', '.join(d.targets)})")
    p.add_argument("--engine", choices=ENGINES, default=d.engine, help="engine the server runs (default %(default)s)")
    p.add_argument("--clients", type=lambda s: tuple(int(x) for x in s.split(",")), default=d.clients,
                   help="client counts tried in order, comma-separated (default %(default)s)")
    p.add_argument("--cores", type=int, default=d.cores, help="cores the server is pinned to; 0 = no pinning")
    p.add_argument("--workers", type=int, default=d.workers, help="server decode threads (0 = one per core)")
    p.add_argument("--threads", type=int, default=d.threads, help="intra-op threads per decode (0 = server default)")
    p.add_argument("--stream-seconds", type=float, default=d.stream_seconds, help="audio per client per step")
    p.add_argument("--latency-budget-ms", type=float, default=d.latency_budget_ms, help="p95 latency pass mark")
    p.add_argument("--no-partials", dest="partials", action="store_false", help="clients ask for finals only")
    p.add_argument("--phases", choices=PHASES, default=d.phases,
                   help="spread: each client starts at its own point of the looped speech (independent users); "
                        "aligned: all at its start, 2 s apart (lines end in bursts) (default %(default)s)")
    p.add_argument("--client-config", action="append", default=[], metavar="KEY=VALUE",
                   help="extra field of every client's config message, JSON value (repeatable), e.g. "
                        "end_of_turn=smart")
    p.add_argument("--soak-minutes", type=float, default=d.soak_minutes, help="soak length (0 = skip)")
    p.add_argument("--soak-target", default=d.soak_target, help="model of the soak")
    p.add_argument("--soak-clients", type=int, default=d.soak_clients,
                   help="clients of the soak (0 = the largest passing N of the soak target)")
    p.add_argument("--goal-clients", type=int, default=d.goal_clients, help="clients the goal asks for")
    p.add_argument("--out", type=Path, default=d.out, help="folder for server_bench.json / server_bench.md")
    p.add_argument("--flood-seconds", type=float, default=d.flood_seconds, help="flood test audio per client (0 = skip)")


def cli(args: argparse.Namespace) -> int:
    options = ServerBenchOptions(
        targets=tuple(args.targets or ServerBenchOptions.targets), engine=args.engine, clients=args.clients,
        cores=args.cores, workers=args.workers, threads=args.threads, stream_seconds=args.stream_seconds,
        latency_budget_ms=args.latency_budget_ms, partials=args.partials, phases=args.phases,
        client_config=tuple(args.client_config),
        soak_minutes=args.soak_minutes, soak_target=args.soak_target, soak_clients=args.soak_clients,
        goal_clients=args.goal_clients, out=args.out, flood_seconds=args.flood_seconds)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = run(options)
    write(report, options.out)
    print((options.out / "server_bench.md").read_text())
    return 0
