"""What the benchmarks share: the emulator as a process, the runner as a child process, specs, data.

Every benchmark runs the emulator and the runner in two separate processes (the machine has two
cores, one each), talks to the emulator only over loopback, and measures the runner from outside
(``wait4`` rusage: peak RSS, CPU) as well as from inside (``bench._child`` times ``run_job``).

Scale knobs are environment variables read with :func:`env_int`, so a quick run is
``BENCH_QUICK=1 python -m bench``; each benchmark documents its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
WORK = Path(os.environ.get("BENCH_WORK") or Path(tempfile.gettempdir()) / "bedrock-batch-bench")
"""Scratch space: datasets (cached between runs), job directories, child logs."""

READY_PREFIX = "bedrock-batch emulator listening on "
RESULT_PREFIX = "BENCH-RESULT "
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
"""``BENCH_QUICK=1``: every benchmark at a small scale (minutes, not a quarter of an hour)."""

HAIKU = "anthropic.claude-haiku-4-5-20251001-v1:0"
SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
TEMPLATE = "Summarise in one sentence for a {audience} reader:\n\n{text}"
SYSTEM = "You are a concise technical writer."

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Admin calls go straight to loopback, whatever proxy the environment names."""


def env_int(name: str, default: int, quick: int | None = None) -> int:
    """An integer knob: ``$name``, else ``quick`` under ``BENCH_QUICK``, else ``default``."""
    value = os.environ.get(name)
    if value:
        return int(value.replace("_", ""))
    return quick if (QUICK and quick is not None) else default


def child_env() -> dict[str, str]:
    """Environment of child processes: the repo importable, no proxy for loopback, no real AWS keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # BENCH_RUNNER_PATH: import ``runner`` from another checkout (A/B of an engine change).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("BENCH_RUNNER_PATH"), str(ROOT)) if p)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def cli_command() -> list[str]:
    """The ``bedrock-batch`` console script of this interpreter's environment."""
    script = Path(PYTHON).parent / "bedrock-batch"
    if script.exists():
        return [str(script)]
    return [PYTHON, "-c", "import sys; from runner.cli import main; sys.exit(main())"]


def cli_child(argv: list[str], *, name: str) -> Child:
    """``bedrock-batch ARGV`` as a child that reports its own peak RSS (``bench._child cli``)."""
    return Child([PYTHON, "-m", "bench._child", "cli"], name=name, stdin=json.dumps({"argv": argv}))


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpu: int, *, always: bool = False) -> None:
    """Pin a process (0: this one) to one CPU when ``BENCH_PIN=1`` or ``always`` (off by default: on
    a shared, noisy machine the scheduler moving a process off a busy core beats a fixed core; the
    emulator benchmark always pins, its figure is per core)."""
    wanted = always or os.environ.get("BENCH_PIN") == "1"
    if wanted and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(pid, {cpu})


# --- data ------------------------------------------------------------------------------------------


def dataset(rows: int) -> Path:
    """The demo dataset with ``rows`` rows (``runner.demo_data``), made once and cached in ``WORK``."""
    from runner.demo_data import make_demo_dataset

    path = WORK / "data" / f"demo-{rows}.parquet"
    if not path.exists():
        make_demo_dataset(path, rows=rows, seed=0)
    return path


def job_spec(
    *,
    input: Path,
    output: Path,
    endpoint_url: str,
    model: str = HAIKU,
    region: str = "us-east-1",
    endpoints: tuple[str, ...] = ("global", "us"),
    max_in_flight: int = 128,
    tpm: int = 0,
    adaptive: bool = True,
    max_tokens: int = 256,
    **sections: Mapping[str, Any],
) -> dict[str, Any]:
    """The benchmarks' job: ``jobs/demo.toml`` (template, shared cached system prompt, kept column)."""
    spec: dict[str, Any] = {
        "job": {"name": output.name, "input": str(input), "output": str(output)},
        "model": {
            "id": model,
            "region": region,
            "endpoints": list(endpoints),
            "preflight": False,
            "endpoint_url": endpoint_url,
        },
        "columns": {
            "id": "id",
            "template": TEMPLATE,
            "system": SYSTEM,
            "cache_system": True,
            "keep": ["team"],
        },
        "request": {"max_tokens": max_tokens, "temperature": 0.2},
        "limits": {"max_in_flight": max_in_flight, "tpm": tpm, "adaptive": adaptive},
    }
    for name, values in sections.items():
        spec.setdefault(name, {}).update(values)
    return spec


def write_toml(spec: Mapping[str, Any], path: Path) -> Path:
    """A job spec dict as a TOML file (the subset of TOML the specs use), for the CLI."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"no TOML for {v!r}")

    lines: list[str] = []
    for section, table in spec.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {value(v)}" for key, v in table.items()]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def fresh_dir(name: str) -> Path:
    """An empty directory ``WORK/jobs/name`` (a previous one is removed)."""
    import shutil

    path = WORK / "jobs" / name
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def code_digest(*modules: str) -> str:
    """Hash of runner source files: cache keys for data that depends on how the runner writes it."""
    h = hashlib.blake2b(digest_size=8)
    for module in modules:
        h.update((ROOT / "runner" / module).read_bytes())
    return h.hexdigest()


# --- the emulator ------------------------------------------------------------------------------


class EmulatorProcess:
    """``python -m runner.emulator --port 0`` as a child process, with its admin API.

    ``with EmulatorProcess("--latency-ms", "2000") as emu: emu.url, emu.counters(), emu.patch({...})``
    """

    def __init__(self, *flags: str, cpu: int = 0) -> None:
        self.flags = flags
        self.cpu = cpu
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> EmulatorProcess:
        (WORK / "logs").mkdir(parents=True, exist_ok=True)
        log = (WORK / "logs" / "emulator.log").open("a")
        with log:
            self.process = subprocess.Popen(
                [PYTHON, "-m", "runner.emulator", "--host", "127.0.0.1", "--port", "0", *self.flags],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=WORK,
                env=child_env(),
            )
        pin(self.process.pid, self.cpu)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith(READY_PREFIX):
            self.__exit__()
            raise RuntimeError(f"the emulator did not start: {line!r} (see {WORK / 'logs' / 'emulator.log'})")
        self.url = line[len(READY_PREFIX) :]
        if not self.url.startswith(("http://127.0.0.1:", "http://localhost:")):
            self.__exit__()
            raise RuntimeError(f"the emulator is not on loopback: {self.url}")
        return self

    def __exit__(self, *exc: object) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def admin(self, method: str, name: str, data: Any = None) -> Any:
        body = None if data is None else json.dumps(data).encode()
        request = urllib.request.Request(
            f"{self.url}/_emulator/{name}",
            data=body,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with _NO_PROXY.open(request, timeout=30) as response:
            return json.loads(response.read())

    def counters(self) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("GET", "counters")
        result.pop("bodies", None)
        return result

    def put_faults(self, config: Mapping[str, Any]) -> None:
        self.admin("PUT", "faults", dict(config))

    def patch_faults(self, patch: Mapping[str, Any]) -> None:
        self.admin("PATCH", "faults", dict(patch))

    def reset(self) -> None:
        self.admin("POST", "reset", {"faults": False})


def ok_requests(counters: Mapping[str, Any], route: str | None = None) -> int:
    """Billed (``ok``) InvokeModel answers, of one emulator route (``profile@region``) or all."""
    requests: Mapping[str, Mapping[str, int]] = counters.get("requests", {})
    return sum(v.get("ok", 0) for name, v in requests.items() if route is None or name == route)


def all_requests(counters: Mapping[str, Any], route: str | None = None) -> int:
    requests: Mapping[str, Mapping[str, int]] = counters.get("requests", {})
    return sum(sum(v.values()) for name, v in requests.items() if route is None or name == route)


# --- the runner in a child process --------------------------------------------------------------


class Child:
    """A child process (the runner), with its rusage collected by ``wait4`` when it ends.

    ``rusage`` after :meth:`wait`: ``cpu_s`` (user + system), ``wall_s``, and ``maxrss_mb``, which on
    Linux also counts the image the child was forked from: use the child's own ``VmHWM`` for its peak.
    """

    def __init__(self, args: list[str], *, name: str, stdin: str | None = None, cpu: int = 1) -> None:
        WORK.joinpath("logs").mkdir(parents=True, exist_ok=True)
        self.log_path = WORK / "logs" / f"{name}.log"
        self.started = time.monotonic()
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=WORK,
                env=child_env(),
            )
        pin(self.process.pid, cpu)
        self._stdout: list[str] = []
        if stdin is not None:
            assert self.process.stdin is not None
            self.process.stdin.write(stdin)
            self.process.stdin.close()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.returncode: int | None = None
        self.rusage: dict[str, float] = {}

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._stdout.append(line)

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> bool:
        """Whether the child has ended (reaps it and records its rusage if so)."""
        if self.returncode is not None:
            return True
        pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return False
        self._finish(status, usage)
        return True

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.poll():
            if deadline is not None and time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"child {self.pid} ran over {timeout:g} s (log: {self.log_path})")
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def _finish(self, status: int, usage: Any) -> None:
        self.returncode = os.waitstatus_to_exitcode(status)
        self.process.returncode = self.returncode
        self.rusage = {
            "wall_s": time.monotonic() - self.started,
            "maxrss_mb": usage.ru_maxrss / 1024,
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }
        self._reader.join(5)

    def signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            self.wait()

    def result(self) -> dict[str, Any]:
        """The JSON object a ``bench._child`` target printed (after :meth:`wait`)."""
        for line in reversed(self._stdout):
            if line.startswith(RESULT_PREFIX):
                data: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
                return data
        raise RuntimeError(
            f"child {self.pid} printed no result (exit {self.returncode}; log: {self.log_path})"
        )

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.returncode is None:
            self.kill()


def run_child(target: str, params: Mapping[str, Any], *, name: str, timeout: float = 1800) -> dict[str, Any]:
    """Run ``bench._child TARGET`` with ``params`` and return its result plus its rusage."""
    with Child([PYTHON, "-m", "bench._child", target], name=name, stdin=json.dumps(params)) as child:
        code = child.wait(timeout)
        if code != 0 and not any(line.startswith(RESULT_PREFIX) for line in child._stdout):
            raise RuntimeError(f"{target} child failed with exit {code}; see {child.log_path}")
        result = child.result()
        result["process"] = child.rusage
        return result


LOG_LEVEL = os.environ.get("BENCH_LOG_LEVEL", "warning")
"""The jobs' log level: ``info`` keeps each route's quota decisions in its job's ``events.jsonl``."""


def run_jobs(
    specs: Mapping[str, Mapping[str, Any]], *, stagger_s: float = 2.0, max_reruns: int = 0
) -> dict[str, dict[str, Any]]:
    """Run each spec as a ``bench._child job`` process side by side; their results by name.

    Starts are ``stagger_s`` apart: on 2 cores, a dozen interpreters importing aioboto3 at once
    starve each other's first seconds, which is when a quota controller's start-up happens.

    With ``max_reruns``, each job is rerun while it has retryable failed rows, as its user would:
    ``bedrock-batch run`` ends such a job with "rerun the same command to retry them", and a rerun
    of the same spec on the same output directory resumes it and sends those rows again
    (``JobDir.done_keys``: retryable errors are not done, without ``--retry-failed``). Each job has a
    thread that reruns it, in a new process, as soon as its own previous pass ends.

    A result is the first pass's, plus ``passes`` (every pass's result, each with ``wall_s``: its
    process's wall time, interpreter start-up included) and ``reruns``; the last pass's
    ``progress`` holds the job's final counts. A job whose child fails gives ``{"error": ...}``.
    """
    results: dict[str, dict[str, Any]] = {}
    live: dict[str, Child] = {}
    stop = threading.Event()

    def one(name: str, spec: Mapping[str, Any]) -> None:
        stdin = json.dumps({"spec": spec, "grace_s": 1.0, "log_level": LOG_LEVEL})
        passes: list[dict[str, Any]] = []
        try:
            while len(passes) <= max_reruns and not stop.is_set():
                label = name if not passes else f"{name}-rerun{len(passes)}"
                child = Child([PYTHON, "-m", "bench._child", "job"], name=label, stdin=stdin)
                live[name] = child
                child.wait(timeout=1800)
                result = child.result()
                result["wall_s"] = child.rusage["wall_s"]
                passes.append(result)
                if not result["progress"].get("failed_retryable"):
                    break
        except (RuntimeError, TimeoutError) as exc:
            results[name] = {"error": str(exc)}
            return
        if not passes:  # stopped before the first pass started
            results[name] = {"error": "not run"}
            return
        results[name] = {**passes[0], "passes": passes, "reruns": len(passes) - 1}

    threads: list[threading.Thread] = []
    try:
        for name, spec in specs.items():
            if threads:
                time.sleep(stagger_s)
            thread = threading.Thread(target=one, args=(name, spec), name=f"bench-{name}", daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
    finally:
        stop.set()
        for child in list(live.values()):
            if child.returncode is None:
                child.kill()
        for thread in threads:
            thread.join(10)
    return results


@contextlib.contextmanager
def sampler(
    emulator: EmulatorProcess, interval_s: float = 0.5
) -> Iterator[list[tuple[float, dict[str, Any]]]]:
    """Sample the emulator's counters every ``interval_s`` in a thread: ``[(monotonic, counters), ...]``."""
    samples: list[tuple[float, dict[str, Any]]] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                samples.append((time.monotonic(), emulator.counters()))
            stop.wait(interval_s)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(10)


def rounded(value: float, digits: int = 3) -> float:
    return round(value, digits)
