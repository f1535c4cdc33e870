"""`<run>/<target>/bench.json`: one `edgekd bench` of a run's target, as the runner measured it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.run.manifest import Budget
from edgekd.run.schema import Record, extra_field, field, parse, read, version_field, write


@dataclass(frozen=True)
class Measure(Record):
    """One model timed by the bench agent on the runner."""

    provider: str = field("the execution provider that ran it")
    threads: int | None = field("intra-op threads actually used")
    latency_ms: dict = field("{p50, p90, p99, mean} at batch 1")
    peak_rss_mb: float | None = field("peak resident memory of the runner process")
    golden: dict | None = field("the golden check: {passed, top1_agreement, ...}", optional=True)
    provider_requested: str | None = field("the provider the profile asked for first", optional=True)
    threads_requested: int | None = field("intra-op threads the profile asked for", optional=True)
    fallback: bool | None = field("the requested provider did not run (another did)", optional=True)
    emulated: bool | None = field("timed under qemu: not the target's timings", optional=True)
    precision: str | None = field("fp32, fp16 or int8", optional=True)
    execution: dict | None = field("{device, vendor, ep_version, runtime}: where the provider ran", optional=True)
    init_ms: float | None = field("session creation time", optional=True)
    first_run_ms: float | None = field("the first inference", optional=True)
    throughput: dict | None = field("{batch: samples per second}", optional=True)
    latency_raw: dict | None = field("every timed run: {encoding: float32-zlib-base64, unit, n, data}", optional=True)
    profile: dict | None = field("--profile: {provider: {total_ms, runs, ops: [{op, total_ms, share, calls, "
                                 "mean_us}]}}", optional=True)
    extra: dict[str, Any] = extra_field()

    def p(self, q: str) -> float:
        """A latency percentile (p50, p90...) in ms; BadInput-free: the field was checked on reading."""
        return float(self.latency_ms[q])


@dataclass(frozen=True)
class BenchFile(Record):
    """`<run>/<target>/bench.json`, written by `edgekd bench` before any budget or golden check fails."""

    runner: str = field("local, qemu or ssh://...")
    target: str = field("the target profile's name")
    fp32: Measure = field("the fp32 model")
    int8: Measure | None = field("the int8 variant, null when the run has none")
    recommended: str = field("fp32 or int8")
    notes: list = field("why the recommendation, and the runner's warnings")
    budget: Budget = field("the budget checks of the recommended model")
    schema_version: int | None = version_field()
    host: dict | None = field("the host's CPU and ISA flags", optional=True)
    comparison: dict | None = field("teacher (ONNX) and eager student on the same host, unless --no-compare",
                                    optional=True)
    extra: dict[str, Any] = extra_field()

    @property
    def chosen(self) -> Measure:
        """The recommended model's measurement."""
        return self.int8 if self.recommended == "int8" and self.int8 is not None else self.fp32


def from_json(obj: Any, source: str | Path = "<memory>") -> BenchFile:
    return parse(BenchFile, obj, source)


def load_bench(path: str | Path) -> BenchFile:
    """Read and check a bench.json; BadInput names the file and the field that is missing or mistyped."""
    return read(BenchFile, path)


def write_bench(path: str | Path, data: dict[str, Any]) -> BenchFile:
    """Check `data` against the contract, stamp the schema version and write it atomically."""
    return write(BenchFile, path, data)
