"""Google BigQuery, with google-cloud-bigquery; results as Arrow through the Storage Read API.

Credentials, one of: a service account key file (``credentials_file``), a key's JSON kept in a
secret (``credentials_json: {env: ...}`` or ``{aws_secret: ...}``), or, when neither is given,
Application Default Credentials (machine identity: the attached service account on GCE/GKE/Cloud
Run, workload identity federation, or ``gcloud auth application-default login``).

One read:

1. the window is bound as named query parameters ``@partition_start``/``@partition_end``
   (``window_param_type``: TIMESTAMP by default);
2. when the query writes ``FOR SYSTEM_TIME AS OF :snapshot_time`` after its tables, the source asks
   the server for ``CURRENT_TIMESTAMP()`` first and binds it as ``@snapshot_time``: every table is
   read as of that one instant (also on a re-run within the time-travel window), and the instant is
   recorded as ``source_state.snapshot_time``. A ``mode: as_of`` snapshot passes ``pin_at`` (the
   partition's end): that is bound instead, once the server's time has passed it (refused before,
   ``as_of_not_reached``; the server's time is ``source_state.server_time``), and an end beyond the
   dataset's time travel fails once (``beyond_time_travel``). Without it a query still reads one consistent
   snapshot per table, as of the job's start, recorded as such with ``pinned: false``;
3. a dry run first: a statement that is not a ``SELECT`` (DML, DDL, a script) is refused before it
   runs, and so is a query whose estimate exceeds ``maximum_bytes_billed``; the real job carries
   ``maximum_bytes_billed`` too (the server's own guard) and ``job_timeout_ms`` (the statement
   timeout, enforced by the server, which cancels the job);
4. rows stream as Arrow record batches, through the Storage Read API when it is installed and
   allowed, page by page over REST otherwise; the Arrow schema is derived from the result's
   BigQuery schema, not from the values, and every batch is checked against it
   (:mod:`snapshot_platform.sources.exact`).

Types: each column is exact or the read fails, naming it, before anything is published. INT64,
FLOAT64 (NaN and infinities included), NUMERIC (``decimal128(38, 9)``), BIGNUMERIC
(``decimal256(76, 38)``: a value of 10^38 or more fails, naming the column), BOOL, STRING, BYTES,
DATE, DATETIME (naive), TIME, TIMESTAMP (UTC), STRUCT, ARRAY and RANGE keep their Arrow types.
GEOGRAPHY (WKT) and JSON are the server's text. INTERVAL has no exact Arrow/Parquet form (BigQuery's
range exceeds Arrow's month-day-nanosecond one, and Parquet has neither): the query is wrapped to
select ``CAST(col AS STRING)``, the server's canonical text (``1-2 3 4:5:6.789``); an INTERVAL
inside a STRUCT or ARRAY fails, naming the column. ``SourceRead.source_types`` records each column's
BigQuery type (``BIGNUMERIC``, ``ARRAY<STRUCT<a INT64>>``) in the manifest.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import json
from typing import Any, Iterator, Literal
from urllib.parse import urlsplit

import pyarrow as pa
from pydantic import Field, model_validator

from snapshot_platform.secrets import SecretMissingError, SecretOrLiteral, SecretRef, aws_refs, resolve
from snapshot_platform.sources.base import (Source, SourceError, SourceRead, SourceSpecBase, Window, beyond_time_travel,
                                            ordered, redact, refuse_future_pin)
from snapshot_platform.sources.bigquery_types import arrow_type, kind_of, type_name
from snapshot_platform.sources.exact import conform_exact
from snapshot_platform.sources.sql import SNAPSHOT_TIME_PARAM, find_placeholders, rewrite


class BigQuerySourceSpec(SourceSpecBase):
    """BigQuery: a service account key (file or JSON in a secret) or Application Default Credentials."""

    kind: Literal["bigquery"]
    project: str = Field(pattern=r"^[a-z][a-z0-9:.-]{0,127}$", description="the project that runs (and pays for) the jobs")
    location: str | None = None
    credentials_file: SecretOrLiteral | None = Field(default=None, description="service account key file")
    credentials_json: SecretRef | None = Field(default=None, description="service account key JSON in a secret")
    anonymous: bool = Field(default=False, description="no credentials at all: only for an emulator (api_endpoint)")
    api_endpoint: str | None = Field(default=None, description="REST endpoint (emulators, private endpoints)")
    storage_api: bool = Field(default=True, description="read results through the Storage Read API (Arrow)")
    storage_api_endpoint: str | None = Field(default=None, description="host:port of the Storage Read API")
    maximum_bytes_billed: int = Field(default=10 * 2**30, ge=1, description="a query that would bill more fails")
    window_param_type: Literal["TIMESTAMP", "DATETIME", "DATE"] = "TIMESTAMP"
    fetch_batch_rows: int = Field(default=50_000, ge=100, le=1_000_000)

    @model_validator(mode="after")
    def _credentials(self) -> "BigQuerySourceSpec":
        if self.credentials_file is not None and self.credentials_json is not None:
            raise ValueError("give credentials_file or credentials_json, not both (neither: Application Default Credentials)")
        if self.anonymous and (self.api_endpoint is None or self.credentials_file or self.credentials_json):
            raise ValueError("anonymous is only for an emulator: it needs api_endpoint and no credentials")
        return self

_SCOPES = ["https://www.googleapis.com/auth/bigquery", "https://www.googleapis.com/auth/cloud-platform"]
_TRANSIENT_REASONS = {"backendError", "internalError", "rateLimitExceeded", "jobRateLimitExceeded"}

_CONFORM_HINT = "cast it in the query (e.g. CAST({column} AS STRING))"


def uses_snapshot_time(query: str) -> bool:
    return any(p.name == SNAPSHOT_TIME_PARAM for p in find_placeholders(query, backslash_escapes=True))


class BigQuerySource(Source):
    kind = "bigquery"
    serial_reason = ("separate BigQuery jobs share a point in time only through FOR SYSTEM_TIME AS OF on every "
                     "table, which the query would have to spell; BigQuery already runs the query in "
                     "parallel on its side")
    spec: BigQuerySourceSpec

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": "bigquery",
            "host": urlsplit(self.spec.api_endpoint).hostname if self.spec.api_endpoint else "bigquery.googleapis.com",
            "database": self.spec.project,
            "project": self.spec.project,
            "location": self.spec.location,
        }
        if self.spec.credentials_file is not None or self.spec.credentials_json is not None:
            d["auth"] = "service_account_key"
        else:
            d["auth"] = "anonymous" if self.spec.anonymous else "application_default"
        return d

    def _secrets(self) -> list[str]:
        found: list[str] = []
        with contextlib.suppress(Exception):
            if self.spec.credentials_json is not None:
                raw = resolve(self.spec.credentials_json)
                found.append(raw)
                info = json.loads(raw)
                found += [str(info.get("private_key", "")), str(info.get("private_key_id", ""))]
        return found

    # ------------------------------------------------------------ clients

    def _credentials(self, refresh: bool) -> Any:
        from google.auth.credentials import AnonymousCredentials

        if self.spec.anonymous:
            return AnonymousCredentials()
        if self.spec.credentials_json is not None:
            from google.oauth2 import service_account

            info = json.loads(resolve(self.spec.credentials_json, refresh=refresh))
            return service_account.Credentials.from_service_account_info(info, scopes=_SCOPES)
        if self.spec.credentials_file is not None:
            from google.oauth2 import service_account

            return service_account.Credentials.from_service_account_file(
                resolve(self.spec.credentials_file), scopes=_SCOPES
            )
        import google.auth

        credentials, _project = google.auth.default(scopes=_SCOPES)
        return credentials

    def _clients(self, refresh: bool) -> tuple[Any, Any]:
        from google.api_core.client_options import ClientOptions
        from google.cloud import bigquery

        credentials = self._credentials(refresh)
        options = ClientOptions(api_endpoint=self.spec.api_endpoint) if self.spec.api_endpoint else None
        client = bigquery.Client(
            project=self.spec.project,
            credentials=credentials,
            location=self.spec.location,
            client_options=options,
        )
        return client, self._storage_client(credentials)

    def _storage_client(self, credentials: Any) -> Any:
        if not self.spec.storage_api:
            return None
        try:
            from google.cloud.bigquery_storage_v1 import BigQueryReadClient
        except ImportError:
            return None  # google-cloud-bigquery-storage not installed: rows come over REST
        endpoint = self.spec.storage_api_endpoint
        if endpoint is None:
            if self.spec.api_endpoint is not None:
                return None  # an emulator without a Storage API endpoint: REST
            return BigQueryReadClient(credentials=credentials)
        host = endpoint.rsplit(":", 1)[0].strip("[]")
        if host in {"127.0.0.1", "localhost", "::1"}:
            import grpc
            from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport

            return BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=grpc.insecure_channel(endpoint)))
        from google.api_core.client_options import ClientOptions

        return BigQueryReadClient(credentials=credentials, client_options=ClientOptions(api_endpoint=endpoint))

    # ------------------------------------------------------------ errors

    def _error(self, exc: BaseException, stage: str) -> SourceError:
        from google.api_core import exceptions as gexc

        text = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, self._secrets())
        reasons = {e.get("reason") for e in getattr(exc, "errors", None) or [] if isinstance(e, dict)}
        code = getattr(exc, "code", None)
        transient = False
        hint = ""
        if isinstance(exc, concurrent.futures.TimeoutError):
            hint = f"cancelled by the statement timeout ({self.spec.statement_timeout_s:g}s): "
            text = "the job did not finish in time"
            code = "timeout"
        elif "bytesBilledLimitExceeded" in reasons:
            hint = f"the query would bill more than maximum_bytes_billed ({self.spec.maximum_bytes_billed}): "
        elif "jobTimeout" in reasons or "timeout" in reasons:
            hint = f"cancelled by the statement timeout ({self.spec.statement_timeout_s:g}s): "
            code = "timeout"
        elif isinstance(exc, (gexc.Forbidden, gexc.Unauthorized)) and not (reasons & _TRANSIENT_REASONS):
            hint = "permission denied: "
        elif isinstance(exc, (gexc.InternalServerError, gexc.ServiceUnavailable, gexc.BadGateway, gexc.GatewayTimeout)):
            transient = stage != "connect"
        elif reasons & _TRANSIENT_REASONS:
            transient = True
        elif type(exc).__module__.startswith("google.auth"):
            hint = "authentication failed: "
        return SourceError(
            f"source {self.name} ({stage}): {hint}{text}",
            transient=transient,
            code=str(code) if code is not None else None,
        )

    # ------------------------------------------------------------ the read

    @contextlib.contextmanager
    def read(self, query: str, window: Window, key: list[str], pin_at: dt.datetime | None = None
             ) -> Iterator[SourceRead]:
        import google.auth.exceptions
        from google.api_core import exceptions as gexc
        from google.api_core.retry import Retry
        from google.cloud import bigquery

        failures = (gexc.GoogleAPIError, google.auth.exceptions.GoogleAuthError, concurrent.futures.TimeoutError,
                    OSError, ValueError)
        # API calls give up after the connect timeout: an unreachable endpoint fails fast
        api_retry = bigquery.DEFAULT_RETRY.with_deadline(self.spec.connect_timeout_s)
        api_timeout = self.spec.connect_timeout_s
        stage = "connect"
        refreshable = bool(aws_refs(self.spec.credentials_json))
        client = None
        pinned = uses_snapshot_time(query)
        server_time: dt.datetime | None = None
        try:
            for attempt in (0, 1):
                client, storage = self._clients(refresh=attempt == 1)
                try:
                    snapshot_time: dt.datetime | None = None
                    stage = "snapshot marker"
                    if pinned:
                        job = client.query("SELECT CURRENT_TIMESTAMP() AS now", retry=api_retry, timeout=api_timeout,
                                           job_config=bigquery.QueryJobConfig(use_query_cache=False), job_retry=None)
                        snapshot_time = next(iter(job.result(timeout=self.spec.statement_timeout_s, retry=api_retry,
                                                             job_retry=None)))[0]
                        if pin_at is not None:  # mode: as_of: the partition's end, if it has passed
                            refuse_future_pin(self.name, pin_at, snapshot_time)
                            server_time, snapshot_time = snapshot_time, pin_at.astimezone(dt.timezone.utc)
                    break
                except (google.auth.exceptions.RefreshError, gexc.Unauthorized):
                    if attempt == 1 or not refreshable:
                        raise
            assert client is not None
            stage = "dry run"
            sql, _ = rewrite(ordered(query, key, quote=_quote), lambda n, _i: f"@{n}", backslash_escapes=True)
            params = self._parameters(window, snapshot_time)
            dry = client.query(
                sql,
                job_config=bigquery.QueryJobConfig(query_parameters=params, dry_run=True, use_query_cache=False),
                retry=api_retry,
                timeout=api_timeout,
                job_retry=None,
            )
            if (dry.statement_type or "SELECT").upper() != "SELECT":
                raise SourceError(
                    f"source {self.name}: the query is a {dry.statement_type} statement; snapshots only run SELECT",
                    code="not_select",
                )
            # types without an exact Arrow form: INTERVAL as the server's text, anything else refused
            select = self._text_columns(dry.schema or [])
            if select:
                sql, _ = rewrite(ordered(query, key, quote=_quote, select=select), lambda n, _i: f"@{n}",
                                 backslash_escapes=True)
            estimate = dry.total_bytes_processed or 0
            if estimate > self.spec.maximum_bytes_billed:
                raise SourceError(
                    f"source {self.name}: the query would process {estimate} bytes, more than "
                    f"maximum_bytes_billed ({self.spec.maximum_bytes_billed}); narrow it or raise the limit",
                    code="bytes_billed",
                )
            stage = "query"
            config = bigquery.QueryJobConfig(
                query_parameters=params,
                maximum_bytes_billed=self.spec.maximum_bytes_billed,
                labels={"tool": "snapshot_platform"},
                use_legacy_sql=False,
            )
            config.job_timeout_ms = int(self.spec.statement_timeout_s * 1000)
            # job_retry=None: a failed job is retried (or not) by capture.take_snapshot, from the partition's start
            job = client.query(sql, job_config=config, job_id_prefix="snapshot_platform_", retry=api_retry,
                               timeout=api_timeout, job_retry=None)
            try:
                rows = job.result(timeout=self.spec.statement_timeout_s, page_size=self.spec.fetch_batch_rows,
                                  retry=Retry(deadline=self.spec.statement_timeout_s), job_retry=None)
            except concurrent.futures.TimeoutError:
                with contextlib.suppress(Exception):
                    job.cancel(timeout=api_timeout)
                raise
            dry_types = {f.name: type_name(f) for f in dry.schema or []}
            source_types = {f.name: dry_types.get(f.name, type_name(f)) for f in rows.schema}
            fields = []
            for f in rows.schema:
                t = arrow_type(f)
                if t is None:
                    raise SourceError(
                        f"source {self.name}: column {f.name} is a BigQuery {source_types[f.name]}, which has no "
                        f"exact Arrow type here; " + _CONFORM_HINT.format(column=f.name), code="inexact_type")
                fields.append(pa.field(f.name, t, True))
            schema = pa.schema(fields)
            started = job.started or job.created
            state = {
                "engine": "bigquery",
                "job_id": job.job_id,
                "location": job.location,
                "snapshot_time": (snapshot_time or started).astimezone(dt.timezone.utc).isoformat()
                if (snapshot_time or started) else None,
                "pinned": snapshot_time is not None,
                **({"server_time": server_time.astimezone(dt.timezone.utc).isoformat()} if server_time else {}),
                "total_bytes_processed": job.total_bytes_processed,
                "total_bytes_billed": job.total_bytes_billed,
                "cache_hit": job.cache_hit,
                "read_api": "storage" if storage is not None else "rest",
            }

            def batches() -> Iterator[pa.RecordBatch]:
                try:
                    for b in rows.to_arrow_iterable(bqstorage_client=storage):
                        if b.num_rows:
                            yield conform_exact(b, schema, self.name, "BigQuery", source_types, _CONFORM_HINT)
                except SourceError:
                    raise
                except pa.ArrowInvalid as exc:
                    # the client library builds REST pages into Arrow itself: a value that does not fit
                    # (a BIGNUMERIC of 10^38 or more) fails there, before our check sees the batch
                    raise SourceError(
                        f"source {self.name} (streaming rows): a value does not fit its column's exact Arrow type "
                        f"({exc}); BigQuery types: {source_types}; " + _CONFORM_HINT.format(column="the column"),
                        code="inexact_type") from None
                except failures as exc:
                    raise self._error(exc, "streaming rows") from None

            yield SourceRead(schema=schema, batches=batches(), params=window.as_params(), state=state,
                             source_types=source_types)
        except SourceError:
            raise
        except SecretMissingError as exc:
            raise SourceError(f"source {self.name} ({stage}): {exc}") from None
        except failures as exc:
            if server_time is not None and pin_at is not None and _beyond_time_travel(exc):
                raise beyond_time_travel(
                    self.name, pin_at, "the dataset's max_time_travel_hours: 7 days by default, 2 at least",
                    f"{stage}: {redact(str(exc).strip().splitlines()[0], self._secrets())}") from None
            raise self._error(exc, stage) from None
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()

    def _text_columns(self, fields: list[Any]) -> list[str] | None:
        """The wrapped query's select list when a column needs the server's text (INTERVAL), else None.

        An INTERVAL column becomes ``CAST(col AS STRING)``; one nested in a STRUCT or ARRAY is refused.
        """
        if not any(kind_of(f) == "INTERVAL" or arrow_type(f) is None for f in fields):
            return None
        select = []
        for f in fields:
            column = f"snapshot_query.{_quote(f.name)}"
            if kind_of(f) == "INTERVAL" and f.mode != "REPEATED":
                select.append(f"CAST({column} AS STRING) AS {_quote(f.name)}")
            elif arrow_type(f) is None:
                raise SourceError(
                    f"source {self.name}: column {f.name} is a BigQuery {type_name(f)}, which has no exact Arrow "
                    f"type here (INTERVAL is kept as text only as a top-level column); "
                    + _CONFORM_HINT.format(column=f.name), code="inexact_type")
            else:
                select.append(column)
        return select

    def _parameters(self, window: Window, snapshot_time: dt.datetime | None) -> list[Any]:
        from google.cloud import bigquery

        utc = dt.timezone.utc
        kind = self.spec.window_param_type

        def bound(t: dt.datetime) -> Any:
            t = t.astimezone(utc)
            if kind == "DATE":
                return t.date()
            if kind == "DATETIME":
                return t.replace(tzinfo=None)
            return t

        params = [
            bigquery.ScalarQueryParameter("partition_start", kind, bound(window.start)),
            bigquery.ScalarQueryParameter("partition_end", kind, bound(window.end)),
        ]
        if snapshot_time is not None:
            params.append(bigquery.ScalarQueryParameter(SNAPSHOT_TIME_PARAM, "TIMESTAMP", snapshot_time))
        return params


def _beyond_time_travel(exc: BaseException) -> bool:
    """BigQuery's refusal of a ``FOR SYSTEM_TIME AS OF`` instant older than the table's time travel
    window (``Invalid snapshot time ... Cannot read before ...``; the local emulator, DuckLake: ``No
    snapshot found at timestamp ...``)."""
    text = str(exc).lower()
    return any(s in text for s in ("invalid snapshot time", "cannot read before", "no snapshot found at timestamp"))


def _quote(name: str) -> str:
    """BigQuery quotes identifiers with backticks; a backtick inside is escaped with a backslash."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
