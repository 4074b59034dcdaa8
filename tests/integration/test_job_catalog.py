"""The seed's remaining facts end to end (real aioboto3 client, the emulator over loopback): Australia,
a user catalogue (a new model, an application inference profile ARN), the 1M-context beta checked
before any call, and rows over 200,000 input tokens priced at long-context rates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runner.cli import main
from runner.emulator import EmulatorThread
from runner.exit_codes import EXIT_OK, EXIT_SPEC_INVALID
from runner.job import run_job
from runner.pricing import PriceTable
from runner.types import Usage
from tests.helpers import make_spec, read_results, spec_data, write_prompts, write_spec, write_table

SONNET_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU_45 = "anthropic.claude-haiku-4-5-20251001-v1:0"
NEW_MODEL = "anthropic.claude-sonnet-5-20260301-v1:0"
ARN = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4"
CATALOG = f"""
[models."{NEW_MODEL}"]
name = "Claude Sonnet 5"
geographies = ["global", "us"]
max_output_tokens = 64000
output_burndown = 5
regional_surcharge = true
prices = {{ input = 4.0, output = 20.0, cache_write = 5.0, cache_read = 0.4 }}

[profiles."{ARN}"]
model = "{SONNET_45}"
geography = "us"
name = "reviews-team-a"
"""


@pytest.fixture(name="catalog_file")
def fixture_catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG, encoding="utf-8")
    return path


def priced(row: dict[str, Any], table: PriceTable) -> float:
    usage = Usage(
        row["input_tokens"],
        row["output_tokens"],
        row["cache_creation_input_tokens"],
        row["cache_read_input_tokens"],
    )
    return table.cost(row["model_id"], usage, lane=row["lane"])


class TestAustralia:
    def test_residency_au(self, emu: EmulatorThread, tmp_path: Path) -> None:
        """residency = "au" from Sydney: every row served by the au. profile, nothing else called."""
        source = write_prompts(tmp_path / "in.parquet", 10)
        data = spec_data(
            source,
            tmp_path / "out",
            emu.url,
            model={"id": SONNET_45, "region": "ap-southeast-2", "residency": "au", "preflight": True},
        )
        assert run_job(make_spec(tmp_path, data), handle_signals=False, progress=False).exit_code == EXIT_OK
        rows = read_results(tmp_path / "out").to_pylist()
        assert {(r["model_id"], r["region"]) for r in rows} == {(f"au.{SONNET_45}", "ap-southeast-2")}
        assert set(emu.counters()["requests"]) == {f"au.{SONNET_45}@ap-southeast-2"}

    def test_models_lists_au_profiles_from_sydney(
        self, emu: EmulatorThread, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`models --region ap-southeast-2` sees Haiku 4.5's au. profile."""
        assert main(["models", "--endpoint-url", emu.url, "--region", "ap-southeast-2", "--json"]) == EXIT_OK
        data = json.loads(capsys.readouterr().out)
        haiku = next(m for m in data["models"] if m["base_id"] == HAIKU_45)
        assert haiku["profiles"]["au"] == {"id": f"au.{HAIKU_45}", "account": "visible"}


class TestUserCatalog:
    def test_a_model_the_built_in_catalogue_lacks(
        self, emu: EmulatorThread, tmp_path: Path, catalog_file: Path
    ) -> None:
        """A model from [model] catalog runs (the emulator reads the same catalogue) and is priced from
        the file, whose name the price table carries."""
        source = write_prompts(tmp_path / "in.parquet", 6)
        model = {"id": NEW_MODEL, "catalog": str(catalog_file), "endpoints": ["us"]}
        data = spec_data(source, tmp_path / "out", emu.url, model=model)
        assert run_job(make_spec(tmp_path, data), handle_signals=False, progress=False).exit_code == EXIT_OK
        rows = read_results(tmp_path / "out").to_pylist()
        assert {r["model_id"] for r in rows} == {f"us.{NEW_MODEL}"}
        table = PriceTable.load()
        for row in rows:
            assert row["cost_usd"] == pytest.approx(priced(row, table))
            assert row["cost_usd"] == pytest.approx(
                (row["input_tokens"] * 4.4 + row["output_tokens"] * 22) / 1e6
            )
            assert str(catalog_file) in row["price_table"]

    def test_an_application_profile_arn(
        self, emu: EmulatorThread, tmp_path: Path, catalog_file: Path
    ) -> None:
        """An application inference profile ARN as [model] id: called as the ARN, from its region,
        priced as the us. profile it copies."""
        source = write_prompts(tmp_path / "in.parquet", 6)
        model = {"id": ARN, "catalog": str(catalog_file), "region": "eu-west-1", "preflight": True}
        data = spec_data(source, tmp_path / "out", emu.url, model=model)
        assert run_job(make_spec(tmp_path, data), handle_signals=False, progress=False).exit_code == EXIT_OK
        rows = read_results(tmp_path / "out").to_pylist()
        assert {(r["model_id"], r["region"]) for r in rows} == {(ARN, "us-east-1")}
        table = PriceTable.load()
        for row in rows:
            usage = Usage(row["input_tokens"], row["output_tokens"])
            assert row["cost_usd"] == pytest.approx(table.cost(f"us.{SONNET_45}", usage))
        assert set(emu.counters()["requests"]) == {f"{ARN}@us-east-1"}

    def test_models_shows_the_catalogue(
        self, emu: EmulatorThread, catalog_file: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`models --catalog` lists the file's model with its prices, and its application profile."""
        args = ["models", "--catalog", str(catalog_file), "--endpoint-url", emu.url, "--json"]
        assert main(args) == EXIT_OK
        data = json.loads(capsys.readouterr().out)
        new = next(m for m in data["models"] if m["base_id"] == NEW_MODEL)
        assert new["price_usd_per_million"]["input"] == 4.0
        assert new["account"]["visible"] is True
        assert data["application_profiles"][0]["arn"] == ARN
        assert data["catalog"] == str(catalog_file)

    def test_a_bad_catalogue_is_exit_2(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A catalogue with a mistake stops the run with exit 2 and one line naming file and key."""
        bad = tmp_path / "bad.toml"
        bad.write_text(f'[models."{NEW_MODEL}"]\nname = "x"\n', encoding="utf-8")
        source = write_prompts(tmp_path / "in.parquet", 2)
        data = spec_data(source, tmp_path / "out", emu.url, model={"id": NEW_MODEL, "catalog": str(bad)})
        assert main(["run", str(write_spec(tmp_path / "job.toml", data))]) == EXIT_SPEC_INVALID
        assert "a new model needs `geographies`" in capsys.readouterr().err
        assert emu.counters()["total_requests"] == 0


class TestLongContext:
    def test_the_1m_beta_on_haiku_is_exit_2_before_any_call(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The 1M-context flag on Haiku 4.5 stops the run before the first call, naming flag and model."""
        source = write_prompts(tmp_path / "in.parquet", 3)
        data = spec_data(
            source, tmp_path / "out", emu.url, request={"anthropic_beta": ["context-1m-2025-08-07"]}
        )
        assert main(["run", str(write_spec(tmp_path / "job.toml", data))]) == EXIT_SPEC_INVALID
        err = capsys.readouterr().err
        assert "context-1m-2025-08-07" in err and "Claude Haiku 4.5" in err
        assert emu.counters()["total_requests"] == 0

    def test_rows_over_200k_tokens_are_priced_long(
        self, emu: EmulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A prompt over 200,000 tokens costs the long-context rates in cost_usd, in --estimate and in
        stats; a short row beside it costs the standard rates."""
        long_prompt = "word " * 170_000  # 850,000 characters: about 212,500 tokens
        source = write_table(
            tmp_path / "in.parquet", {"id": ["long", "short"], "prompt": [long_prompt, "Hi."]}
        )
        data = spec_data(
            source,
            tmp_path / "out",
            emu.url,
            model={"id": SONNET_45, "endpoints": ["global"]},
            request={"anthropic_beta": ["context-1m-2025-08-07"], "max_tokens": 16},
        )
        spec_path = write_spec(tmp_path / "job.toml", data)
        assert main(["run", str(spec_path), "--estimate"]) == EXIT_OK
        estimate = capsys.readouterr().out
        long_tokens = len(long_prompt) // 4 + 1
        low = (long_tokens * 6 + (len("Hi.") // 4 + 1) * 3) / 1e6
        assert f"${low:,.2f} (no output)" in estimate
        assert main(["run", str(spec_path), "--no-progress"]) == EXIT_OK
        rows = {r["id"]: r for r in read_results(tmp_path / "out").to_pylist()}
        long, short = rows["long"], rows["short"]
        assert long["input_tokens"] > 200_000
        assert long["cost_usd"] == pytest.approx(
            (long["input_tokens"] * 6 + long["output_tokens"] * 22.5) / 1e6
        )
        assert short["cost_usd"] == pytest.approx(
            (short["input_tokens"] * 3 + short["output_tokens"] * 15) / 1e6
        )
        capsys.readouterr()
        assert main(["stats", str(tmp_path / "out"), "--json", "--prices", str(_builtin_prices())]) == EXIT_OK
        stats = json.loads(capsys.readouterr().out)
        assert stats["cost_usd"] == pytest.approx(long["cost_usd"] + short["cost_usd"])


def _builtin_prices() -> Path:
    """The packaged price table as a file, so `stats --prices` re-prices every row from its tokens."""
    import runner

    return Path(runner.__file__).parent / "prices.toml"
