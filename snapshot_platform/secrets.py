"""Secret references (``{env: NAME}``, ``{aws_secret: NAME, key: FIELD}``) and their values at run time.

The catalog holds secrets only as these references; :func:`resolve` turns one into its value when a
connection opens. This module imports nothing of the catalog.

A secret is fetched when a connection opens, with ``VersionStage="AWSCURRENT"`` (after a rotation the
new version carries that label), and kept in this process's memory only: never on disk, never in a
spec, a log line or an exception. A source whose login fails fetches its secrets once more with
``refresh=True`` before it gives up: that is how a rotation between two reads is picked up without
a restart. Errors name the secret and the field, never a value.

boto3 finds its credentials and region the usual way (instance or task role, ``AWS_PROFILE``,
environment); ``AWS_ENDPOINT_URL_SECRETS_MANAGER`` points it at another endpoint (tests use moto's).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnvRef(_Strict):
    """A value read from an environment variable when a connection opens: ``{env: NAME}``."""

    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    default: str | None = Field(default=None, description="used when the variable is unset (never for secrets)")

    def describe(self) -> str:
        return f"${{{self.env}}}"


class AwsSecretRef(_Strict):
    """A value kept in AWS Secrets Manager: ``{aws_secret: NAME, key: password, region: eu-west-1}``.

    Fetched when a connection opens (``VersionStage=AWSCURRENT``), kept in memory only, and fetched
    again after an authentication failure, so a rotated secret is picked up. ``key`` picks one field
    of a JSON secret (the usual ``{"username": ..., "password": ...}``); without it the whole
    ``SecretString`` is the value.
    """

    aws_secret: str = Field(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9/_+=.@:-]+$")
    key: str | None = Field(default=None, min_length=1, max_length=256)
    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]+$")

    def describe(self) -> str:
        return f"aws-secret:{self.aws_secret}" + (f"#{self.key}" if self.key else "")


SecretRef = Union[EnvRef, AwsSecretRef]
SecretOrLiteral = Union[EnvRef, AwsSecretRef, str]


class SecretMissingError(RuntimeError):
    pass


def resolve(value: SecretOrLiteral, refresh: bool = False) -> str:
    """The plain value of a literal or a reference. Errors name the variable, never a value.

    ``refresh=True`` fetches an AWS secret again instead of using the in-memory copy (after an
    authentication failure: the secret may have been rotated).
    """
    if isinstance(value, AwsSecretRef):
        return fetch_aws_secret(value, refresh=refresh)
    if isinstance(value, EnvRef):
        got = os.environ.get(value.env)
        if got is None or got == "":
            if value.default is not None:
                return os.path.expanduser(value.default) if value.default.startswith("~") else value.default
            raise SecretMissingError(f"environment variable {value.env} is not set")
        return got
    return value


_lock = threading.Lock()
_cache: dict[tuple[str, str | None], str] = {}  # (secret name, region) -> SecretString
fetches = 0  # how many times Secrets Manager was asked (for tests and debugging, never the values)


def _client(region: str | None) -> Any:
    import boto3

    return boto3.session.Session().client("secretsmanager", region_name=region)


def _fetch_secret_string(ref: AwsSecretRef) -> str:
    global fetches
    import botocore.exceptions

    try:
        client = _client(ref.region)
        response = client.get_secret_value(SecretId=ref.aws_secret, VersionStage="AWSCURRENT")
    except botocore.exceptions.NoRegionError:
        raise SecretMissingError(
            f"AWS secret {ref.aws_secret}: no region; set region: in the reference or AWS_REGION"
        ) from None
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise SecretMissingError(f"AWS secret {ref.aws_secret}: Secrets Manager answered {code}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise SecretMissingError(
            f"AWS secret {ref.aws_secret}: cannot reach Secrets Manager ({type(exc).__name__})"
        ) from None
    finally:
        fetches += 1
    value = response.get("SecretString")
    if value is None:
        raise SecretMissingError(f"AWS secret {ref.aws_secret}: a binary secret is not supported; store a string")
    return value


def fetch_aws_secret(ref: AwsSecretRef, refresh: bool = False) -> str:
    """The value ``ref`` names; ``refresh`` asks Secrets Manager again instead of using memory."""
    cache_key = (ref.aws_secret, ref.region)
    with _lock:
        raw = None if refresh else _cache.get(cache_key)
        if raw is None:
            raw = _fetch_secret_string(ref)
            _cache[cache_key] = raw
    if ref.key is None:
        return raw
    try:
        data = json.loads(raw)
    except ValueError:
        raise SecretMissingError(
            f"AWS secret {ref.aws_secret}: key {ref.key!r} asked for, but the secret is not a JSON object"
        ) from None
    if not isinstance(data, dict) or ref.key not in data:
        raise SecretMissingError(f"AWS secret {ref.aws_secret}: has no key {ref.key!r}")
    value = data[ref.key]
    return value if isinstance(value, str) else str(value)


def invalidate(ref: AwsSecretRef | None = None) -> None:
    """Forget one secret (or all): the next use fetches it again."""
    with _lock:
        if ref is None:
            _cache.clear()
        else:
            _cache.pop((ref.aws_secret, ref.region), None)


def aws_refs(*values: Any) -> list[AwsSecretRef]:
    """The AWS secret references among a spec's values (those worth fetching again after a failed login)."""
    return [v for v in values if isinstance(v, AwsSecretRef)]
