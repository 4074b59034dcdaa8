"""When Bedrock cannot be reached at all, the run says so at once and marks no row; a mid-job outage
still waits and resumes.

Every place "Bedrock" lives here is on loopback (``tests/loopback.py``): a closed port, a listener that
never answers, an HTTP server that is not Bedrock, plain HTTP spoken to a TLS client, and a TCP proxy
in front of the session emulator that the test cuts and restores.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import botocore.exceptions
import pytest

from runner import logging as runner_logging
from runner.bedrock import map_botocore_errors, network_cause
from runner.cli import main
from runner.emulator import EmulatorThread
from runner.errors import EndpointUnreachableError, ModelTimeoutError
from runner.exit_codes import EXIT_OK, EXIT_ROWS_FAILED, EXIT_SPEC_INVALID
from runner.job import run_job
from runner.state import JobDir
from runner.types import Route
from tests.helpers import (
    ids_for,
    make_spec,
    read_results,
    spec_data,
    wait_until,
    write_prompts,
    write_spec,
)
from tests.loopback import NotBedrock, SilentListener, TcpProxy, closed_port

ROUTE = Route(
    model_id="global.anthropic.claude-haiku-4-5-20251001-v1:0", region="us-east-1", geography="global"
)


def job_spec(tmp_path: Path, endpoint_url: str, **sections: Any) -> Path:
    """A 20-row job with preflight on, pointed at ``endpoint_url``."""
    source = write_prompts(tmp_path / "in.parquet", 20)
    data = spec_data(source, tmp_path / "out", endpoint_url, model={"preflight": True}, **sections)
    return write_spec(tmp_path / "job.toml", data)


def nothing_marked(job_dir: Path) -> bool:
    """No row of the job has an outcome (none ok, none failed)."""
    progress = JobDir(job_dir).progress()
    return progress.ok == 0 and progress.failed == 0


@pytest.fixture(name="refused")
def fixture_refused() -> Iterator[str]:
    yield f"http://127.0.0.1:{closed_port()}"


class TestPreflightDecides:
    @pytest.mark.parametrize(
        ("setup", "cause"),
        [
            ("refused", "connection refused"),
            ("silent", "no answer within 1 s"),
            ("html404", "answered HTTP 404 without Bedrock's headers"),
            ("html200", "answered HTTP 200 without Bedrock's headers"),
            ("tls", "TLS failed"),
        ],
    )
    def test_no_route_reachable_is_exit_2_in_seconds(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str, cause: str
    ) -> None:
        """Bedrock unreachable on every route: exit 2 within seconds, one line naming the host and the
        cause, no row marked."""
        with SilentListener() as silent, NotBedrock(404) as html404, NotBedrock(200) as html200:
            url = {
                "refused": f"http://127.0.0.1:{closed_port()}",
                "silent": silent.url,
                "html404": html404.url,
                "html200": html200.url,
                "tls": f"https://127.0.0.1:{html404.port}",
            }[setup]
            spec = job_spec(tmp_path, url, retry={"timeout_s": 1.0})
            started = time.monotonic()
            code = main(["run", str(spec)])
            elapsed = time.monotonic() - started
        assert code == EXIT_SPEC_INVALID
        assert elapsed < 10
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("error: cannot reach Bedrock (")
        assert urlsplit(url).netloc in last
        assert cause in last
        assert nothing_marked(tmp_path / "out")
        assert (
            not (tmp_path / "out" / "results.parquet").exists()
            or read_results(tmp_path / "out").num_rows == 0
        )

    def test_every_route_denied_is_still_exit_2(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """AccessDenied on every route stays a preflight failure: exit 2, no row marked."""
        emu.set_faults({"routes": [{"profile": "*", "access_denied": True}]})
        assert main(["run", str(job_spec(tmp_path, emu.url))]) == EXIT_SPEC_INVALID
        assert "no route passed preflight" in capsys.readouterr().err
        assert nothing_marked(tmp_path / "out")
        assert emu.counters()["billed_requests"] == 0
        assert runner_logging._events_stream is None  # the job's events file is closed, not leaked

    def test_a_throttling_bedrock_was_reached(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """A preflight answered by Bedrock with throttles is not "unreachable": the job runs."""
        for profile in (
            "global.anthropic.claude-haiku-4-5-20251001-v1:0",
            "us.anthropic.claude-haiku-4-5-20251001-v1:0",
        ):
            emu.script(profile, "*", ["ThrottlingException"])
        spec = make_spec(
            tmp_path,
            spec_data(
                write_prompts(tmp_path / "in.parquet", 5),
                tmp_path / "out",
                emu.url,
                model={"preflight": True},
            ),
        )
        assert run_job(spec, handle_signals=False, progress=False).exit_code == EXIT_OK


class TestMidJob:
    def proxied_job(self, emu: EmulatorThread, tmp_path: Path, proxy: TcpProxy, n: int, **retry: Any) -> Any:
        source = write_prompts(tmp_path / "in.parquet", n)
        data = spec_data(
            source,
            tmp_path / "out",
            proxy.url,
            limits={"max_in_flight": 4},
            retry={"max_attempts": 12, **retry},
        )
        emu.set_faults({"defaults": {"latency_ms": 20}})
        return make_spec(tmp_path, data)

    def test_outage_mid_job_waits_and_resumes(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """The endpoint refuses connections for a second mid-job: rows wait, then every row ends ok."""
        n = 300
        with TcpProxy(urlsplit(emu.url).port or 0) as proxy:
            spec = self.proxied_job(emu, tmp_path, proxy, n, backoff_max_s=2.0)

            def outage() -> None:
                wait_until(lambda: emu.counters()["billed_requests"] >= 40, timeout=60, what="40 billed rows")
                proxy.cut()
                time.sleep(1.0)
                proxy.restore()

            cutter = threading.Thread(target=outage)
            cutter.start()
            report = run_job(spec, handle_signals=False, progress=False)
            cutter.join(10)
        assert report.exit_code == EXIT_OK
        rows = read_results(tmp_path / "out").to_pylist()
        assert [r["id"] for r in rows] == ids_for(n)
        assert {r["status"] for r in rows} == {"ok"}

    def test_endpoint_gone_for_good_leaves_rows_pending(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """The endpoint stops answering for good mid-job: the run stops with rows pending, none failed,
        and says which endpoint it could not reach; a rerun once it is back finishes the job."""
        n = 150
        with TcpProxy(urlsplit(emu.url).port or 0) as proxy:
            spec = self.proxied_job(emu, tmp_path, proxy, n)

            def gone() -> None:
                wait_until(lambda: emu.counters()["billed_requests"] >= 40, timeout=60, what="40 billed rows")
                proxy.cut()

            cutter = threading.Thread(target=gone)
            cutter.start()
            report = run_job(spec, handle_signals=False, progress=False)
            cutter.join(10)
            assert report.exit_code == EXIT_ROWS_FAILED
            assert report.progress.failed == 0
            assert report.progress.pending > 0
            assert report.stopped is not None
            assert f"127.0.0.1:{proxy.port}: connection refused" in report.stopped
            proxy.restore()
            again = run_job(spec, handle_signals=False, progress=False)
        assert again.exit_code == EXIT_OK
        assert {r["status"] for r in read_results(tmp_path / "out").to_pylist()} == {"ok"}


class TestClassification:
    def test_dns_failure_is_named(self) -> None:
        """A name that does not resolve is "DNS lookup failed", an unreachable endpoint."""
        error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        with (
            pytest.raises(EndpointUnreachableError) as caught,
            map_botocore_errors(ROUTE, endpoint="https://x"),
        ):
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="https://x/model", error=error)
        assert caught.value.cause == "DNS lookup failed"
        assert caught.value.endpoint == "https://x"
        assert caught.value.request_id is None

    def test_connect_timeout_is_unreachable(self) -> None:
        """A connection that times out before it is made is unreachable, not a slow model."""
        with (
            pytest.raises(EndpointUnreachableError, match="timed out connecting"),
            map_botocore_errors(ROUTE),
        ):
            raise botocore.exceptions.ConnectTimeoutError(endpoint_url="https://x/model")

    def test_read_timeout_is_still_a_model_timeout(self) -> None:
        """An answer that takes too long is the model's slowness (retryable), as before."""
        with pytest.raises(ModelTimeoutError), map_botocore_errors(ROUTE, timeout_s=5):
            raise botocore.exceptions.ReadTimeoutError(endpoint_url="https://x/model")

    def test_refused_cause(self) -> None:
        """A refused connection, however deeply wrapped, reads "connection refused"."""
        inner = ConnectionRefusedError(111, "Connection refused")
        outer = botocore.exceptions.EndpointConnectionError(endpoint_url="u", error=OSError("wrapped"))
        outer.__cause__ = inner
        assert network_cause(outer) == "connection refused"

    def test_proxy_failure_names_the_proxy_not_its_password(self) -> None:
        """A proxy that cannot be reached is named by host and port; credentials in its URL are not shown."""
        error = botocore.exceptions.ProxyConnectionError(
            proxy_url="http://user:secret@proxy.internal:3128", error=OSError("down")
        )
        with (
            pytest.raises(EndpointUnreachableError) as caught,
            map_botocore_errors(ROUTE, endpoint="https://x"),
        ):
            raise error
        assert caught.value.cause == "could not connect through the proxy proxy.internal:3128"
        assert "secret" not in str(caught.value)
