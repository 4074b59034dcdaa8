"""The contracts as files stay equal to the code, and the package exports what it documents."""

from __future__ import annotations

import json

import pytest

import runner
from runner import contracts


class TestSchemaFiles:
    def test_files_equal_the_code(self) -> None:
        """schemas/*.json are exactly what the code generates (run `make schemas` after a change)."""
        for name, text in contracts.rendered().items():
            assert (contracts.SCHEMAS_DIR / name).read_text(encoding="utf-8") == text, (
                f"schemas/{name} is stale"
            )

    def test_spec_reference_equals_the_code(self) -> None:
        """docs/spec.md is exactly what the code generates."""
        assert (contracts.DOCS_DIR / "spec.md").read_text(encoding="utf-8") == contracts.spec_reference()

    def test_spec_reference_documents_paths_braces_and_region(self) -> None:
        """docs/spec.md says how paths resolve, how to write literal braces, and the region order."""
        text = contracts.spec_reference()
        assert "relative to the\ndirectory of the spec file" in text
        assert "write `{{` and `}}` for a literal `{` or `}`" in text
        assert "`AWS_REGION`, else `AWS_DEFAULT_REGION`,\nelse the `region` of the AWS profile" in text

    def test_readme_documents_the_conventions(self) -> None:
        """README documents status's exit codes, what complete means, spec-relative paths and version."""
        text = " ".join((contracts.DOCS_DIR.parent / "README.md").read_text(encoding="utf-8").split())
        assert "Exit codes of `status`: **0** the job is complete" in text
        assert "**1** rows failed or are still pending" in text
        assert "`complete` means the same in `status --json` and `stats --json`" in text
        assert "are relative to the spec file" in text
        assert "with a `version` field" in text

    def test_results_schema_has_the_design_columns(self) -> None:
        """Every column DESIGN.md promises is in the output schema."""
        promised = {
            "id", "status", "completion", "stop_reason", "input_tokens", "output_tokens",
            "cache_creation_input_tokens", "cache_read_input_tokens", "model_id", "region",
            "attempts", "latency_ms", "error_type", "error_message", "request_id",
        }  # fmt: skip
        names = {
            c["name"]
            for c in json.loads((contracts.SCHEMAS_DIR / "results.schema.json").read_text())["columns"]
        }
        assert promised <= names


class TestExports:
    def test_all_is_sorted_and_complete(self) -> None:
        """`runner.__all__` is sorted, and each name resolves to a public object defined in the package."""
        assert runner.__all__ == sorted(runner.__all__)
        for name in runner.__all__:
            value = getattr(runner, name)
            assert getattr(value, "__module__", "").startswith("runner."), name
        lazy = set(runner._LAZY)
        assert lazy == set(runner.__all__)

    def test_unknown_attribute_is_an_attribute_error(self) -> None:
        """A name the package does not export is an AttributeError, as for any module."""
        with pytest.raises(AttributeError, match="no attribute 'nope'"):
            runner.nope  # noqa: B018 - the attribute access is the test
