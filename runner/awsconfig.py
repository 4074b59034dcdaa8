"""Where the AWS settings come from, read the way the AWS CLI and boto3 read them: region and profile.

::

    region   --region / [model] region, else AWS_REGION, else AWS_DEFAULT_REGION, else the profile's
             `region` in ~/.aws/config, else us-east-1
    profile  --profile (which sets AWS_PROFILE for the whole process), else AWS_PROFILE, else "default"

The files are ``AWS_CONFIG_FILE`` (``~/.aws/config``, sections ``[default]`` and ``[profile NAME]``)
and ``AWS_SHARED_CREDENTIALS_FILE`` (``~/.aws/credentials``, sections ``[NAME]``); a profile exists when
either file has it. Only configparser is used, so ``status`` can say which region a rerun would use
without loading botocore. A named profile that exists nowhere is :class:`AwsSetupError` (exit 2), the
one line botocore's ``ProfileNotFound`` traceback used to be. Credentials are never read here.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path
from typing import NamedTuple

from runner.catalog import DEFAULT_REGION
from runner.errors import AwsSetupError


class Setting(NamedTuple):
    """A resolved setting and where it came from (``--region``, ``AWS_REGION``, ``profile dev``, ...)."""

    value: str
    source: str


def config_file() -> Path:
    return Path(os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config").expanduser()


def credentials_file() -> Path:
    return Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials").expanduser()


def _read(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise AwsSetupError(f"{path.absolute()}: cannot read this AWS config file ({first})") from None
    return parser


def profile() -> Setting | None:
    """The profile named by ``AWS_PROFILE`` (or the older ``AWS_DEFAULT_PROFILE``), if any."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        if os.environ.get(name):
            return Setting(os.environ[name], name)
    return None


def _profile_section(name: str) -> dict[str, str] | None:
    """The profile's settings in the config file (``None``: not there)."""
    config = _read(config_file())
    for section in (f"profile {name}", name) if name == "default" else (f"profile {name}",):
        if config.has_section(section):
            return dict(config.items(section))
    return None


def check_profile(given_by: str | None = None) -> None:
    """Raise :class:`AwsSetupError` when a named profile is in neither AWS file."""
    named = profile()
    if named is None or named.value == "default":
        return
    if _profile_section(named.value) is not None or _read(credentials_file()).has_section(named.value):
        return
    raise AwsSetupError(
        f"AWS profile {named.value!r} (from {given_by or named.source}) is in neither "
        f"{config_file().absolute()} nor {credentials_file().absolute()}; "
        "`aws configure list-profiles` lists the profiles you have"
    )


def use_profile(name: str | None) -> None:
    """``--profile NAME``: every AWS client of this process (and its S3 access) uses that profile.

    Checks the profile (``--profile`` or the environment's) either way.
    """
    if name:
        os.environ["AWS_PROFILE"] = name
        os.environ.pop("AWS_DEFAULT_PROFILE", None)
    check_profile("--profile" if name else None)


def resolve_region(explicit: str | None = None, *, source: str = "--region") -> Setting:
    """The region a command uses: ``explicit``, then the environment, then the profile, then us-east-1."""
    if explicit:
        return Setting(explicit, source)
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(name):
            return Setting(os.environ[name], name)
    named = profile()
    section = _profile_section(named.value if named else "default")
    if section and section.get("region"):
        return Setting(section["region"], f"profile {named.value if named else 'default'}")
    return Setting(DEFAULT_REGION, "default")
