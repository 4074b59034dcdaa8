"""The price table: built-in figures, surcharge and batch rules, and user override files."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner import catalog
from runner.errors import SpecError
from runner.pricing import PriceTable
from runner.types import Usage

SONNET_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"
SONNET_4 = "anthropic.claude-sonnet-4-20250514-v1:0"
HAIKU_3 = "anthropic.claude-3-haiku-20240307-v1:0"
MILLION = Usage(1_000_000, 1_000_000, 1_000_000, 1_000_000)


@pytest.fixture(name="table")
def fixture_table() -> PriceTable:
    return PriceTable.load()


class TestBuiltin:
    def test_name(self, table: PriceTable) -> None:
        """The packaged table names itself, so every printed cost can say which table priced it."""
        assert table.name == "bedrock-on-demand-2025-11"
        assert "BEDROCK.md" in table.source

    def test_every_catalogue_model_is_priced(self, table: PriceTable) -> None:
        """No model the runner can call lacks a price, on any geography it offers."""
        for model in catalog.MODELS:
            assert model.base_id in table
            for geography in model.geographies:
                assert model.profile_id(geography) in table

    def test_list_prices(self, table: PriceTable) -> None:
        """The global on-demand price is the BEDROCK.md figure, per million tokens."""
        price = table.price_of(f"global.{SONNET_45}")
        assert (price.input, price.output, price.cache_write, price.cache_read) == (3, 15, 3.75, 0.30)
        assert table.cost(f"us.{HAIKU_3}", MILLION) == pytest.approx(0.25 + 1.25 + 0.30 + 0.03)

    def test_anthropic_list_prices_are_marked(self, table: PriceTable) -> None:
        """Models BEDROCK.md does not price say their figures come from Anthropic's list."""
        assert table.base_price("anthropic.claude-3-7-sonnet-20250219-v1:0").source == "anthropic-list"
        assert table.base_price("anthropic.claude-3-5-haiku-20241022-v1:0").source == "anthropic-list"
        assert table.base_price("anthropic.claude-3-opus-20240229-v1:0").source == "anthropic-list"
        assert table.base_price(SONNET_45).source == "bedrock"


class TestRules:
    def test_regional_surcharge_on_new_models(self, table: PriceTable) -> None:
        """A us. profile of Sonnet 4.5 costs 10 % more than global."""
        g = table.cost(f"global.{SONNET_45}", MILLION)
        assert table.cost(f"us.{SONNET_45}", MILLION) == pytest.approx(g * 1.10)
        assert table.cost(f"eu.{SONNET_45}", MILLION) == pytest.approx(g * 1.10)

    def test_no_surcharge_on_older_models(self, table: PriceTable) -> None:
        """Sonnet 4 keeps its price on regional profiles."""
        assert table.cost(f"us.{SONNET_4}", MILLION) == table.cost(f"global.{SONNET_4}", MILLION)

    def test_base_id_is_in_region(self, table: PriceTable) -> None:
        """A base id is an in-region call: surcharged like a geographic profile."""
        assert table.cost(SONNET_45, MILLION) == table.cost(f"us.{SONNET_45}", MILLION)

    def test_batch_is_half(self, table: PriceTable) -> None:
        """The batch lane costs 50 % of on-demand, surcharge included."""
        for model_id in (f"global.{SONNET_45}", f"us.{SONNET_45}", f"us.{SONNET_4}"):
            on_demand = table.cost(model_id, MILLION)
            assert table.cost(model_id, MILLION, lane="batch") == pytest.approx(on_demand * 0.5)

    def test_cost_matches_price_of(self, table: PriceTable) -> None:
        """The precomputed per-token rates agree with the per-million prices."""
        usage = Usage(1234, 567, 89, 10_000)
        price = table.price_of(f"us.{SONNET_45}", lane="batch")
        expected = (1234 * price.input + 567 * price.output + 89 * price.cache_write) / 1e6
        expected += 10_000 * price.cache_read / 1e6
        assert table.cost(f"us.{SONNET_45}", usage, lane="batch") == pytest.approx(expected)

    def test_unknown_model(self, table: PriceTable) -> None:
        """An id the table cannot price is a SpecError naming the model and the table."""
        with pytest.raises(
            SpecError, match=r"bedrock-on-demand-2025-11: no price for model 'anthropic\.claude-9'"
        ):
            table.cost("anthropic.claude-9", MILLION)
        with pytest.raises(SpecError, match="no price"):
            table.price_of("moon.anthropic.claude-sonnet-4-20250514-v1:0")

    def test_unknown_lane(self, table: PriceTable) -> None:
        """A lane other than on_demand or batch is a programming error."""
        with pytest.raises(ValueError, match="unknown lane"):
            table.cost(SONNET_45, MILLION, lane="spot")


GOOD = """
[rules]
regional_surcharge = 0.20
batch_discount = 0.40

[models."anthropic.claude-sonnet-4-5-20250929-v1:0"]
input = 2
output = 10
cache_write = 2.5
cache_read = 0.2

[models."anthropic.claude-next-v1:0"]
input = 1
output = 1
cache_write = 1
cache_read = 1
regional_surcharge = true
"""


class TestOverrideFile:
    def test_good_file_replaces_the_table(self, tmp_path: Path) -> None:
        """A user file replaces the whole table, is named by its path, and brings its own rules."""
        path = tmp_path / "mine.toml"
        path.write_text(GOOD, encoding="utf-8")
        table = PriceTable.load(path)
        assert table.name == str(path)
        assert table.cost(f"global.{SONNET_45}", Usage(1_000_000)) == pytest.approx(2.0)
        assert table.cost(f"us.{SONNET_45}", Usage(1_000_000)) == pytest.approx(2.4)
        assert table.cost(f"global.{SONNET_45}", Usage(0, 1_000_000), lane="batch") == pytest.approx(6.0)
        assert table.is_surcharged("eu.anthropic.claude-next-v1:0")
        assert SONNET_4 not in table

    def test_empty_path_is_builtin(self) -> None:
        """An empty prices setting (the spec default) means the built-in table."""
        assert PriceTable.load("").name == PriceTable.load(None).name == "bedrock-on-demand-2025-11"

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("[models", "not valid TOML"),
            ("[meta]\nname = 'x'\n", r"\[models\] is missing"),
            ('[models."m"]\ninput = 1\noutput = 1\ncache_write = 1\n', r'models\."m"\.cache_read is missing'),
            (
                '[models."m"]\ninput = -1\noutput = 1\ncache_write = 1\ncache_read = 1\n',
                r'models\."m"\.input must be a non-negative',
            ),
            (
                '[models."m"]\ninput = "3"\noutput = 1\ncache_write = 1\ncache_read = 1\n',
                r'models\."m"\.input must be a number',
            ),
            (
                '[models."m"]\ninput = true\noutput = 1\ncache_write = 1\ncache_read = 1\n',
                r'models\."m"\.input must be a number',
            ),
            (
                '[models."m"]\ninput = 1\noutput = 1\ncache_wirte = 1\ncache_read = 1\n',
                r'models\."m"\.cache_wirte is not a price key',
            ),
            (
                '[models."us.m"]\ninput = 1\noutput = 1\ncache_write = 1\ncache_read = 1\n',
                r"price the base model id 'm'",
            ),
            (
                '[rules]\nbatch_discount = 1.0\n[models."m"]\ninput = 1\noutput = 1\n'
                "cache_write = 1\ncache_read = 1\n",
                r"rules\.batch_discount must be below 1",
            ),
            ("[rules]\nsurcharge = 0.1\n", r"rules\.surcharge is not a rule"),
            ("[prices]\n", "unknown top-level key 'prices'"),
        ],
    )
    def test_bad_file(self, tmp_path: Path, text: str, message: str) -> None:
        """A wrong price file is a SpecError that names the file and the key."""
        path = tmp_path / "bad.toml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(SpecError, match=message) as info:
            PriceTable.load(path)
        assert str(info.value).startswith(f"{path}: ")

    def test_missing_file(self, tmp_path: Path) -> None:
        """A price file that does not exist is named in the error."""
        with pytest.raises(SpecError, match=r"nope\.toml: price table not found"):
            PriceTable.load(tmp_path / "nope.toml")


class TestLongContext:
    def test_over_200k_input_is_priced_long(self, table: PriceTable) -> None:
        """Sonnet 4.5 over 200,000 input tokens: input and cache twice, output 1.5 times the standard."""
        usage = Usage(150_000, 1_000, 40_000, 20_000)  # 210,000 input tokens in all
        expected = (150_000 * 6 + 1_000 * 22.5 + 40_000 * 7.5 + 20_000 * 0.6) / 1_000_000
        assert table.cost(f"global.{SONNET_45}", usage) == pytest.approx(expected)

    def test_at_the_threshold_the_standard_rates_apply(self, table: PriceTable) -> None:
        """Exactly 200,000 input tokens is not over the threshold."""
        usage = Usage(200_000, 1_000)
        assert table.cost(f"global.{SONNET_4}", usage) == pytest.approx((200_000 * 3 + 1_000 * 15) / 1e6)

    def test_surcharge_and_batch_apply_on_top(self, table: PriceTable) -> None:
        """A long us. Sonnet 4.5 request pays the regional surcharge on the long rates; batch halves it."""
        usage = Usage(300_000, 1_000)
        long_global = (300_000 * 6 + 1_000 * 22.5) / 1e6
        assert table.cost(f"us.{SONNET_45}", usage) == pytest.approx(long_global * 1.1)
        assert table.cost(f"us.{SONNET_45}", usage, lane="batch") == pytest.approx(long_global * 1.1 / 2)

    def test_a_model_without_long_prices_keeps_its_rates(self, table: PriceTable) -> None:
        """Haiku 3 has no long-context prices: a large request costs its standard rates."""
        assert table.long_rates(f"us.{HAIKU_3}") is None
        assert table.cost(f"us.{HAIKU_3}", Usage(300_000)) == pytest.approx(300_000 * 0.25 / 1e6)

    def test_the_threshold_is_a_rule_of_the_table(self, tmp_path: Path) -> None:
        """A price table sets its own threshold and long-context prices."""
        path = tmp_path / "p.toml"
        path.write_text(
            "[rules]\nlong_context_threshold = 1000\n"
            f'[models."{SONNET_4}"]\ninput = 1\noutput = 1\ncache_write = 1\ncache_read = 1\n'
            f'[models."{SONNET_4}".long_context]\ninput = 2\noutput = 2\ncache_write = 2\ncache_read = 2\n',
            encoding="utf-8",
        )
        custom = PriceTable.load(path)
        assert custom.cost(SONNET_4, Usage(1_001)) == pytest.approx(2 * 1_001 / 1e6)
        assert custom.cost(SONNET_4, Usage(1_000)) == pytest.approx(1_000 / 1e6)


class TestLanes:
    def test_a_dry_runs_lane_is_priced_as_its_lane(self, table: PriceTable) -> None:
        """emulated_on_demand and emulated_batch rows cost what on_demand and batch rows would."""
        usage = Usage(1_000, 100)
        model = f"us.{SONNET_45}"
        assert table.cost(model, usage, lane="emulated_on_demand") == table.cost(model, usage)
        assert table.cost(model, usage, lane="emulated_batch") == table.cost(model, usage, lane="batch")
