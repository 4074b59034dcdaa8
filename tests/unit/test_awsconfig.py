"""Region and profile as the AWS CLI and boto3 read them: flag, AWS_REGION, AWS_DEFAULT_REGION, the
profile's region, us-east-1; an unknown profile is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner import awsconfig
from runner.errors import AwsSetupError

CONFIG = """
[default]
region = eu-west-3

[profile dev]
region = ap-northeast-1

[profile noregion]
output = json
"""


@pytest.fixture(name="config")
def fixture_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An AWS config file with a default and two named profiles, and a credentials file with one more."""
    path = tmp_path / "config"
    path.write_text(CONFIG, encoding="utf-8")
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[keys-only]\naws_access_key_id = x\naws_secret_access_key = y\n", encoding="utf-8"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(path))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    return path


class TestRegion:
    def test_the_order(self, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """--region, then AWS_REGION, then AWS_DEFAULT_REGION, then the profile's region (boto3's order)."""
        monkeypatch.setenv("AWS_PROFILE", "dev")
        assert awsconfig.resolve_region() == ("ap-northeast-1", "profile dev")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
        assert awsconfig.resolve_region() == ("us-west-2", "AWS_DEFAULT_REGION")
        monkeypatch.setenv("AWS_REGION", "eu-central-1")
        assert awsconfig.resolve_region() == ("eu-central-1", "AWS_REGION")
        assert awsconfig.resolve_region("ca-central-1") == ("ca-central-1", "--region")

    def test_default_profile_region(self, config: Path) -> None:
        """Without AWS_PROFILE the [default] section's region counts."""
        assert awsconfig.resolve_region() == ("eu-west-3", "profile default")

    def test_nothing_set_is_us_east_1(self, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A profile without a region, and nothing else: us-east-1."""
        monkeypatch.setenv("AWS_PROFILE", "noregion")
        assert awsconfig.resolve_region() == ("us-east-1", "default")


class TestProfile:
    def test_unknown_profile_is_one_clear_error(self, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A profile in neither file is an AwsSetupError naming it, where it came from and both files."""
        monkeypatch.setenv("AWS_PROFILE", "nope")
        with pytest.raises(AwsSetupError) as caught:
            awsconfig.check_profile()
        message = str(caught.value)
        assert "'nope' (from AWS_PROFILE)" in message
        assert str(config) in message
        assert "\n" not in message

    def test_flag_sets_the_profile_for_the_process(
        self, config: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """--profile is AWS_PROFILE for every client of the process; its region follows."""
        monkeypatch.setenv("AWS_PROFILE", "nope")
        awsconfig.use_profile("dev")
        assert awsconfig.resolve_region() == ("ap-northeast-1", "profile dev")
        with pytest.raises(AwsSetupError, match=r"'other' \(from --profile\)"):
            awsconfig.use_profile("other")

    def test_profile_in_the_credentials_file_only(
        self, config: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A profile that only has keys (in ~/.aws/credentials) exists."""
        monkeypatch.setenv("AWS_PROFILE", "keys-only")
        awsconfig.check_profile()
        assert awsconfig.resolve_region() == ("us-east-1", "default")

    def test_broken_config_file(self, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """An unparsable config file is an AwsSetupError naming the file, not a traceback."""
        config.write_text("region = x\n[default\n", encoding="utf-8")
        with pytest.raises(AwsSetupError, match="cannot read this AWS config file"):
            awsconfig.resolve_region()
