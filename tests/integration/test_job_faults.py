"""Bad input and faults (issue 12): what a new user, or a hostile one, can throw at a job.

Each test drives the real engine (``run_job`` or the ``bedrock-batch`` console script) against the
session emulator over loopback; the promise checked is the one the README makes: a clear one-line
error (exit 2 before any paid call), nothing lost, nothing paid for no reason.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner.cli import main
from runner.emulator import EmulatorThread
from runner.exit_codes import (
    EXIT_ENVIRONMENT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_ROWS_FAILED,
    EXIT_SPEC_INVALID,
)
from runner.job import run_job
from runner.schemas import RESULT_SCHEMA
from runner.source import Source
from runner.spec import load_spec
from runner.state import JobDir
from tests.helpers import (
    BEDROCK_BATCH,
    corrupt_row_group,
    duplicate_bills,
    ids_for,
    invoke_calls,
    make_spec,
    prompts_for,
    read_results,
    rows_by_id,
    spec_data,
    start_cli,
    stop_process,
    text_with_invalid_utf8,
    wait_until,
    write_prompts,
    write_spec,
    write_table,
)

MAX_IN_FLIGHT = 8


class TestRefusedBeforeAnyCall:
    @pytest.mark.parametrize(
        ("sections", "message"),
        [
            (
                {"request": {"max_tokens": 32, "temperature": 5}},
                "[request] `temperature` must be between 0 and 1",
            ),
            ({"request": {"max_tokens": 32, "top_k": -5}}, "[request] `top_k` must not be negative"),
            ({"request": {"max_tokens": 32, "stop_sequences": [""]}}, "`stop_sequences` item 0 is empty"),
            (
                {"request": {"max_tokens": 32, "extra": {"model": "m"}}},
                "`extra` key 'model' is not a body key",
            ),
            (
                {"request": {"max_tokens": 32, "temperature": float("nan")}},
                "must be a finite number, not nan",
            ),
            ({"columns": {"id": "id", "prompt": "prompt", "keep": ["status"]}}, "`keep` has 'status'"),
            ({"model": {"region": "eu-wst-1"}}, "[model] `region` 'eu-wst-1' is not a Bedrock region"),
        ],
        ids=["temperature", "top_k", "stop_sequences", "extra-model", "nan", "keep-status", "region"],
    )
    def test_bad_spec_exits_2_naming_the_key(
        self,
        emu: EmulatorThread,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        sections: dict[str, dict[str, Any]],
        message: str,
    ) -> None:
        """A request parameter Bedrock would refuse in every row: exit 2 naming the key, and no call."""
        source = write_prompts(tmp_path / "in.parquet", 10)
        data = spec_data(source, tmp_path / "out", emu.url)
        for name, values in sections.items():
            data[name].update(values)
        spec = write_spec(tmp_path / "job.toml", data)
        assert main(["run", str(spec)]) == EXIT_SPEC_INVALID
        err = capsys.readouterr().err
        assert message in err
        assert len(err.strip().splitlines()) == 1
        assert invoke_calls(emu.counters()) == 0
        assert not (tmp_path / "out").exists()

    def test_unknown_aws_region_exits_2(
        self,
        emu: EmulatorThread,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A region from AWS_REGION the catalogue does not know is refused too, before any call."""
        source = write_prompts(tmp_path / "in.parquet", 10)
        data = spec_data(source, tmp_path / "out", emu.url)
        data["model"].pop("region")
        spec = write_spec(tmp_path / "job.toml", data)
        monkeypatch.setenv("AWS_REGION", "xx-nowhere-9")
        assert main(["run", str(spec)]) == EXIT_SPEC_INVALID
        assert "region 'xx-nowhere-9' is not a Bedrock region" in capsys.readouterr().err
        assert invoke_calls(emu.counters()) == 0


def crash_spec(tmp_path: Path, source: Path | int, **sections: dict[str, Any]) -> tuple[Path, Path]:
    """A spec for ``source`` (an input file, or a number of rows to write one) without ``endpoint_url``
    (the command line passes it); returns the spec file and the job directory."""
    if isinstance(source, int):
        source = write_prompts(tmp_path / "in.parquet", source)
    settings: dict[str, dict[str, Any]] = {
        "limits": {"max_in_flight": MAX_IN_FLIGHT},
        "output": {"part_rows": 25, "part_seconds": 0.2},
    }
    settings.update(sections)
    data = spec_data(source, tmp_path / "out", "", **settings)
    data["model"].pop("endpoint_url")
    return write_spec(tmp_path / "job.toml", data), tmp_path / "out"


class TestEnvironmentFailures:
    def test_results_path_that_is_a_directory_is_refused_up_front(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A ``results.parquet`` that cannot be written is found before the first call (exit 2), not
        after every row was paid."""
        spec, out = crash_spec(tmp_path, 20)
        (out / "results.parquet").mkdir(parents=True)
        assert main(["run", str(spec), "--endpoint-url", emu.url]) == EXIT_SPEC_INVALID
        err = capsys.readouterr().err
        assert "results.parquet exists and is not a regular file" in err
        assert invoke_calls(emu.counters()) == 0

    def test_output_path_broken_mid_run_exits_3_and_resumes(
        self, emu: EmulatorThread, tmp_path: Path
    ) -> None:
        """The parts directory replaced by a file mid-run: exit 3 (not 2: calls were paid), one line;
        once it is put back, the same command finishes with every id once and little paid twice."""
        emu.set_faults({"defaults": {"latency_ms": 40}})
        n = 300
        spec, out = crash_spec(tmp_path, n)
        args = ["run", str(spec), "--endpoint-url", emu.url]
        proc = start_cli(args, cwd=tmp_path, log=tmp_path / "runner.log")
        wait_until(lambda: emu.counters()["billed_requests"] >= 40, timeout=30, what="40 billed calls")
        parts = out / "_job" / "parts"
        parts.rename(out / "_job" / "parts.moved")
        parts.write_text("not a directory")
        code = proc.wait(30)
        log = (tmp_path / "runner.log").read_text()
        assert code == EXIT_ENVIRONMENT, log
        assert "Traceback" not in log
        assert "stopped after paid calls began" in log

        parts.unlink()
        (out / "_job" / "parts.moved").rename(parts)
        emu.set_faults({})
        assert main(args) == EXIT_OK
        assert read_results(out).column("id").to_pylist() == ids_for(n)
        assert duplicate_bills(emu.counters()) <= MAX_IN_FLIGHT

    def test_disk_full_mid_run_exits_3_and_resumes(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """Writes failing mid-run (a file size limit standing in for a full disk): exit 3, no traceback;
        with room again, the same command finishes the job with every id once."""
        emu.set_faults({"defaults": {"latency_ms": 20}})
        n = 300
        spec, out = crash_spec(tmp_path, n, output={"part_rows": 10_000, "part_seconds": 60.0})
        args = [BEDROCK_BATCH, "run", str(spec), "--endpoint-url", emu.url]

        def small_files() -> None:  # the journal grows past 24 kB after some 50 rows
            resource.setrlimit(resource.RLIMIT_FSIZE, (24_000, 24_000))

        proc = subprocess.run(
            args,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=small_files,
            check=False,
        )
        assert proc.returncode == EXIT_ENVIRONMENT, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "File too large" in proc.stderr
        assert emu.counters()["billed_requests"] > 0

        assert main(args[1:]) == EXIT_OK
        assert read_results(out).column("id").to_pylist() == ids_for(n)
        assert duplicate_bills(emu.counters()) <= MAX_IN_FLIGHT


class TestDamagedInput:
    def test_invalid_utf8_row_is_an_error_row_and_the_rest_run(
        self, emu: EmulatorThread, tmp_path: Path
    ) -> None:
        """A prompt that is not UTF-8 deep in the input: that row is an InvalidText error row, every
        other row is paid once, and a rerun pays nothing (it used to crash every run, after paying)."""
        n = 300
        ids = ids_for(n)
        source = write_table(
            tmp_path / "in.parquet", {"id": ids, "prompt": text_with_invalid_utf8(prompts_for(ids), [250])}
        )
        spec, out = crash_spec(tmp_path, source)
        args = ["run", str(spec), "--endpoint-url", emu.url]
        assert main(args) == EXIT_ROWS_FAILED  # in-process: an exception would fail the test
        rows = rows_by_id(out)
        assert list(rows) == ids
        assert rows[ids[250]]["error_type"] == "InvalidText"
        assert sum(r["status"] == "ok" for r in rows.values()) == n - 1
        assert emu.counters()["billed_requests"] == n - 1

        assert main(args) == EXIT_ROWS_FAILED
        assert emu.counters()["billed_requests"] == n - 1

    def test_corrupt_row_group_is_error_rows_and_the_rest_run(
        self, emu: EmulatorThread, tmp_path: Path
    ) -> None:
        """A corrupt page outside the id column: its row group's rows are UnreadableInput error rows,
        the readable rows after it run too, no traceback (no exception group) reaches the user."""
        n = 300
        source = write_prompts(tmp_path / "in.parquet", n)  # row groups of 64 rows
        corrupt_row_group(source, 2, "prompt")
        spec, out = crash_spec(tmp_path, source)
        assert main(["run", str(spec), "--endpoint-url", emu.url]) == EXIT_ROWS_FAILED  # no exception
        rows = rows_by_id(out)
        assert list(rows) == ids_for(n)
        bad = [i for i, r in rows.items() if r["status"] == "error"]
        assert bad == ids_for(64, start=128)
        assert {rows[i]["error_type"] for i in bad} == {"UnreadableInput"}
        assert emu.counters()["billed_requests"] == n - 64


class TestJobDirectory:
    def test_zero_input_rows_write_an_empty_results_file(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """An input with no rows: exit 0, no call, and results.parquet exists with the full schema."""
        source = write_table(
            tmp_path / "in.parquet",
            {
                "id": pa.array([], pa.string()),
                "prompt": pa.array([], pa.string()),
                "team": pa.array([], pa.string()),
            },
        )
        data = spec_data(source, tmp_path / "out", emu.url, columns={"keep": ["team"]})
        report = run_job(make_spec(tmp_path, data), handle_signals=False)
        assert report.exit_code == EXIT_OK
        results = read_results(tmp_path / "out")
        assert results.num_rows == 0
        assert results.schema.names == [*RESULT_SCHEMA.names, "team"]
        assert invoke_calls(emu.counters()) == 0

    def test_job_directory_is_private(self, emu: EmulatorThread, tmp_path: Path, umask_022: None) -> None:
        """Under umask 022 the job directory is 0700 and every file the run wrote in it is 0600."""
        source = write_prompts(tmp_path / "in.parquet", 30)
        report = run_job(
            make_spec(tmp_path, spec_data(source, tmp_path / "out", emu.url)), handle_signals=False
        )
        assert report.exit_code == EXIT_OK
        out = tmp_path / "out"
        assert out.stat().st_mode & 0o777 == 0o700
        dirs = [p for p in out.rglob("*") if p.is_dir()]
        files = [p for p in out.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {
            "results.parquet",
            "state.json",
            "spec.json",
            "events.jsonl",
            "lock",
        }
        assert {p.name: p.stat().st_mode & 0o777 for p in dirs} == {p.name: 0o700 for p in dirs}
        assert {p.name: p.stat().st_mode & 0o777 for p in files} == {p.name: 0o600 for p in files}


class TestForcedResume:
    def test_a_crash_before_the_remap_ends_does_not_corrupt_the_job(
        self, emu: EmulatorThread, tmp_path: Path
    ) -> None:
        """Killed after ``--force`` recorded the new input but before the part rows were moved, a plain
        rerun finishes the remap: ids in the new input order, each once, only the new ids paid."""
        source = write_prompts(tmp_path / "in.parquet", 20)
        spec_file = write_spec(tmp_path / "job.toml", spec_data(source, tmp_path / "out", emu.url))
        assert main(["run", str(spec_file)]) == EXIT_OK
        before = rows_by_id(tmp_path / "out")
        emu.reset()

        ids = [*ids_for(5, start=100), *reversed(ids_for(15))]  # new ids first, the kept ones reversed
        write_table(source, {"id": ids, "prompt": prompts_for(ids)})
        # What `run --force` does before it moves the part rows, then the kill:
        spec = load_spec(spec_file)
        opened = Source(spec)
        JobDir(tmp_path / "out").start_run(
            spec=spec.to_dict(), fingerprint=opened.fingerprint().to_dict(), force=True, stamp=opened.stamp()
        )

        assert main(["run", str(spec_file)]) == EXIT_OK  # no --force: the input now matches state.json
        after = rows_by_id(tmp_path / "out")
        assert list(after) == ids
        assert all(after[i]["request_id"] == before[i]["request_id"] for i in ids_for(15))
        counters = emu.counters()
        assert counters["billed_requests"] == 5
        assert duplicate_bills(counters) == 0

    def test_an_edit_that_keeps_size_and_mtime_runs_again(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """A prompt edited in place with the file's size and modification time kept (cp -p, rsync -t):
        the rerun sends that row again and replaces its old answer; no other row is paid twice."""
        ids = ids_for(20)
        prompts = prompts_for(ids)
        source = tmp_path / "in.parquet"
        plain: dict[str, Any] = {"compression": "none", "use_dictionary": False, "write_statistics": False}
        pq.write_table(pa.table({"id": ids, "prompt": prompts}), source, **plain)
        spec_file = write_spec(tmp_path / "job.toml", spec_data(source, tmp_path / "out", emu.url))
        assert main(["run", str(spec_file)]) == EXIT_OK
        before = rows_by_id(tmp_path / "out")
        emu.reset()

        stat = source.stat()
        prompts[7] = prompts[7].upper()  # same length
        pq.write_table(pa.table({"id": ids, "prompt": prompts}), source, **plain)
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert (source.stat().st_size, source.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)

        assert main(["run", str(spec_file)]) == EXIT_OK
        assert emu.counters()["billed_requests"] == 1
        after = rows_by_id(tmp_path / "out")
        assert after[ids[7]]["request_id"] != before[ids[7]]["request_id"]
        assert all(after[i]["request_id"] == before[i]["request_id"] for i in ids if i != ids[7])


class TestDocuments:
    @pytest.mark.timeout(60)
    def test_document_paths_that_are_not_files_are_error_rows(
        self, emu: EmulatorThread, tmp_path: Path
    ) -> None:
        """A FIFO, /dev/zero and a directory as document paths: error rows at once (no hang, no memory
        blow-up, no call); the real PDF beside them is answered."""
        fifo = tmp_path / "pipe.pdf"
        os.mkfifo(fifo)
        (tmp_path / "dir.pdf").mkdir()
        pdf = tmp_path / "ok.pdf"
        pdf.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Page >> endobj\n%%EOF\n")
        paths = [str(fifo), "/dev/zero", str(tmp_path / "dir.pdf"), str(pdf)]
        ids = ids_for(4)
        source = write_table(tmp_path / "in.parquet", {"id": ids, "prompt": prompts_for(ids), "pdf": paths})
        data = spec_data(source, tmp_path / "out", emu.url, columns={"document": "pdf"})
        report = run_job(make_spec(tmp_path, data), handle_signals=False)
        assert report.exit_code == EXIT_ROWS_FAILED
        rows = rows_by_id(tmp_path / "out")
        assert [rows[i]["error_type"] for i in ids] == ["BadDocument"] * 3 + [None]
        assert rows[ids[3]]["status"] == "ok"
        assert emu.counters()["billed_requests"] == 1


class TestStartUp:
    def test_sigterm_while_the_runner_starts_exits_130(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """SIGTERM while the runner is still loading its modules (pyarrow half-loaded) exits 130, not 143;
        the same command then runs the job."""
        spec, out = crash_spec(tmp_path, 10)
        args = ["run", str(spec), "--endpoint-url", emu.url]
        proc = start_cli(args, cwd=tmp_path, log=tmp_path / "runner.log")
        maps = Path(f"/proc/{proc.pid}/maps")
        wait_until(
            lambda: proc.poll() is not None or "libarrow" in maps.read_text(),
            timeout=30,
            what="pyarrow to start loading",
            interval=0.001,
        )
        assert stop_process(proc, signal.SIGTERM) == EXIT_INTERRUPTED, (tmp_path / "runner.log").read_text()
        assert invoke_calls(emu.counters()) == 0

        assert main(args) == EXIT_OK
        assert read_results(out).column("id").to_pylist() == ids_for(10)

    def test_import_runner_loads_nothing_heavy(self) -> None:
        """``import runner`` and the CLI module load neither pyarrow nor botocore, so the console script
        handles signals before they load (the library names are imported on first use)."""
        heavy = "{'pyarrow', 'aioboto3', 'botocore'}"
        code = f"import sys, runner, runner.cli; print(sorted({heavy} & set(sys.modules)))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "[]"


class TestStatus:
    def test_status_counts_results_in_the_journal(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Killed before it committed a part, a run's answers are only in the journal: ``status`` counts
        them as done (it showed 0), exactly the rows the next run recovers from the journal."""
        emu.set_faults({"defaults": {"latency_ms": 30}})
        spec, out = crash_spec(tmp_path, 300, output={"part_rows": 10_000, "part_seconds": 60.0})
        args = ["run", str(spec), "--endpoint-url", emu.url]
        proc = start_cli(args, cwd=tmp_path, log=tmp_path / "runner.log")
        wait_until(lambda: emu.counters()["billed_requests"] >= 40, timeout=30, what="40 billed calls")
        proc.kill()
        proc.wait(10)
        assert main(["status", str(out), "--json"]) == EXIT_ROWS_FAILED  # rows still pending
        info = json.loads(capsys.readouterr().out)
        assert info["ok"] >= 30
        assert info["ok"] + info["pending"] == 300

        emu.set_faults({})
        assert main(args) == EXIT_OK
        err = capsys.readouterr().err
        recovered = re.search(r"\(([\d,]+) recovered from the journal\)", err)
        assert recovered is not None, err
        assert int(recovered.group(1).replace(",", "")) == info["ok"]


class TestQuotaWarnings:
    def test_tpm_below_one_reservation_is_a_warning_naming_the_figures(
        self, emu: EmulatorThread, tmp_path: Path
    ) -> None:
        """``tpm = 1`` with ``max_tokens = 32``: a warning in the log that names tpm and the reservation
        (it used to wait in silence)."""
        source = write_prompts(tmp_path / "in.parquet", 1)
        data = spec_data(source, tmp_path / "out", emu.url, limits={"max_in_flight": 8, "tpm": 1})
        report = run_job(make_spec(tmp_path, data), handle_signals=False)
        assert report.exit_code == EXIT_OK
        events = [
            json.loads(line) for line in (tmp_path / "out" / "_job" / "events.jsonl").read_text().splitlines()
        ]
        warnings = [e for e in events if e["event"] == "limits.tpm_below_reservation"]
        assert len(warnings) == 1
        assert warnings[0]["level"] == "warning"
        assert (warnings[0]["tpm"], warnings[0]["max_tokens"]) == (1, 32)
        assert warnings[0]["reservation"] > 32
        assert "[limits] tpm = 1 is smaller than one request's reservation" in warnings[0]["message"]

    def test_a_sufficient_tpm_warns_nothing(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """A quota larger than every reservation gives no such warning."""
        source = write_prompts(tmp_path / "in.parquet", 5)
        data = spec_data(source, tmp_path / "out", emu.url, limits={"max_in_flight": 8, "tpm": 1_000_000})
        assert run_job(make_spec(tmp_path, data), handle_signals=False).exit_code == EXIT_OK
        assert "tpm_below_reservation" not in (tmp_path / "out" / "_job" / "events.jsonl").read_text()
