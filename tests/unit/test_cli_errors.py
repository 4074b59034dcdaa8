"""How the run command reports what stopped it: one line and a named exit code, never a group."""

from __future__ import annotations

import pytest

from runner.cli.run import fail_cleanly
from runner.errors import JobEnvironmentError, SinkError, SourceError, leaf_error
from runner.exit_codes import EXIT_ENVIRONMENT, EXIT_INTERRUPTED, EXIT_SPEC_INVALID


def exit_code(
    exc: BaseException, capsys: pytest.CaptureFixture[str], *, internal: bool = True
) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info, fail_cleanly(False, internal=internal):
        raise exc
    assert isinstance(info.value.code, int)
    return info.value.code, capsys.readouterr().err


class TestFailCleanly:
    def test_a_group_is_reported_as_the_error_it_wraps(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A SourceError inside nested task-group exception groups is one line and exit 2."""
        group = BaseExceptionGroup("outer", [ExceptionGroup("inner", [SourceError("in.parquet: bad")])])
        code, err = exit_code(group, capsys)
        assert (code, err) == (EXIT_SPEC_INVALID, "error: in.parquet: bad\n")

    def test_environment_failure_is_exit_3(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A JobEnvironmentError is exit 3 with its message."""
        error = JobEnvironmentError("disk full; rerun", cause=SinkError("disk full"))
        assert exit_code(error, capsys) == (EXIT_ENVIRONMENT, "error: disk full; rerun\n")

    def test_ctrl_c_inside_a_group_is_exit_130(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A KeyboardInterrupt a task group wrapped still means interrupted: exit 130."""
        code, _ = exit_code(BaseExceptionGroup("g", [KeyboardInterrupt()]), capsys)
        assert code == EXIT_INTERRUPTED

    def test_an_internal_error_is_one_line(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Any other exception in `run` is one line naming its type, exit 3 (resumable)."""
        code, err = exit_code(ValueError("boom"), capsys)
        assert code == EXIT_ENVIRONMENT
        assert err.startswith("error: internal error (ValueError: boom)")
        assert len(err.strip().splitlines()) == 1

    def test_other_commands_let_bugs_through(self) -> None:
        """Without `internal`, an exception that is no BatchError propagates unchanged."""
        with pytest.raises(ValueError, match="boom"), fail_cleanly(False):
            raise ValueError("boom")


class TestLeafError:
    def test_prefers_a_batch_error_over_cancellations(self) -> None:
        """The first BatchError leaf wins, wherever it sits in the tree."""
        import asyncio

        error = SinkError("x")
        group = BaseExceptionGroup(
            "g", [asyncio.CancelledError(), ExceptionGroup("h", [ValueError(), error])]
        )
        assert leaf_error(group) is error

    def test_plain_exception_is_itself(self) -> None:
        """An exception that is no group is returned as it is."""
        error = ValueError()
        assert leaf_error(error) is error
