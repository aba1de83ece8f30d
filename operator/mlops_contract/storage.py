"""Storage URIs shared by the operator, the trainer and the server.

Supported locations:

    builtin:<name>            a dataset scikit-learn ships (no storage at all)
    pvc://<claim>/<path>      a file or directory on a PersistentVolumeClaim, mounted in pods at
                              <pvc_root>/<claim> (pvc_root: env MLOPS_PVC_ROOT, default /mnt/pvc)
    s3://<bucket>/<key>       an object, or every object under a prefix (boto3, an optional extra)
    https://<host>/<path>     one file over HTTP(S)

Invariants: `parse_uri` and `local_path` are pure (no I/O); `local_path` never returns a path
outside <pvc_root>/<claim> (`..` segments are refused, not normalised away). `fetch` and
`upload` are the only functions that touch the network; they raise `FetchError` with
`transient` telling a retry may help (timeouts, 5xx) from a permanent failure (404, 403).
"""

from __future__ import annotations

import http
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

import urllib3

DEFAULT_PVC_ROOT: Final = "/mnt/pvc"
ENV_PVC_ROOT: Final = "MLOPS_PVC_ROOT"
ENV_HTTP_AUTHORIZATION: Final = "MLOPS_HTTP_AUTHORIZATION"
ENV_S3_ENDPOINT: Final = "AWS_ENDPOINT_URL"
SCHEMES: Final = ("builtin", "pvc", "s3", "https", "http")
ENV_S3_VIRTUAL_BUCKET: Final = "S3_USE_VIRTUAL_BUCKET"
HTTP_TIMEOUT_SECONDS: Final = 60.0  # per read: a stalled server, not a slow download
HTTP_CONNECT_TIMEOUT_SECONDS: Final = 10.0
HTTP_MAX_REDIRECTS: Final = 5
HTTP_MAX_BYTES: Final = 16 * 1024**3  # one https:// source: a dataset file, not a disk filler
HTTP_CHUNK_BYTES: Final = 1024 * 1024
S3_CONNECT_TIMEOUT_SECONDS: Final = 5.0
S3_READ_TIMEOUT_SECONDS: Final = 60.0
S3_MAX_ATTEMPTS: Final = 3  # the first try and two retries, botocore's "standard" backoff
S3_MAX_POOL_CONNECTIONS: Final = 10  # s3transfer's default concurrency
# 4xx answers that retrying can fix (everything else 4xx is permanent; see _s3_error).
S3_TRANSIENT_CODES: Final = frozenset({"RequestTimeout", "SlowDown", "Throttling", "ThrottlingException"})


class InvalidUri(ValueError):
    """The URI is malformed, has an unsupported scheme or escapes its volume."""


class FetchError(Exception):
    """Downloading or uploading failed; `transient` says whether retrying may succeed."""

    def __init__(self, message: str, *, transient: bool, missing: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        # Nothing at the URI (no such object or prefix), as opposed to a refusal or a fault.
        self.missing = missing


@dataclass(frozen=True)
class ParsedUri:
    """A storage URI split into its parts.

    `authority` is the claim (pvc), bucket (s3), host (http/https) or dataset name (builtin);
    `path` is the rest, without a leading slash ("" when absent).
    """

    scheme: str
    authority: str
    path: str

    @property
    def claim(self) -> str:
        return self.authority

    @property
    def bucket(self) -> str:
        return self.authority


def parse_uri(uri: str) -> ParsedUri:
    """Split a storage URI; raise InvalidUri for an unsupported scheme or a missing authority."""
    if uri.startswith("builtin:"):
        name = uri.removeprefix("builtin:")
        if not name:
            raise InvalidUri(f"{uri!r}: builtin: needs a dataset name, e.g. builtin:iris")
        return ParsedUri("builtin", name, "")
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in SCHEMES:
        raise InvalidUri(f"{uri!r}: unsupported URI; use pvc://, s3://, https:// or builtin:")
    authority, _, path = rest.partition("/")
    if not authority:
        raise InvalidUri(
            f"{uri!r}: missing {'claim' if scheme == 'pvc' else 'bucket' if scheme == 's3' else 'host'}"
        )
    return ParsedUri(scheme, authority, path.strip("/"))


def default_pvc_root(env: Mapping[str, str] | None = None) -> Path:
    """Where claims are mounted: env MLOPS_PVC_ROOT, default /mnt/pvc."""
    source = os.environ if env is None else env
    return Path(source.get(ENV_PVC_ROOT) or DEFAULT_PVC_ROOT)


def local_path(uri: str, pvc_root: str | os.PathLike[str] | None = None) -> Path:
    """Map `pvc://claim/some/path` to `<pvc_root>/claim/some/path`.

    `pvc_root` defaults to env MLOPS_PVC_ROOT, else /mnt/pvc. Only pvc:// URIs have a local
    path; a `..` segment is refused so a spec can never reach outside its claim.
    """
    parsed = parse_uri(uri)
    if parsed.scheme != "pvc":
        raise InvalidUri(f"{uri!r}: only pvc:// URIs have a local path")
    segments = PurePosixPath(parsed.path).parts if parsed.path else ()
    if ".." in segments or parsed.authority in (".", ".."):
        raise InvalidUri(f"{uri!r}: '..' is not allowed in a pvc:// path")
    root = Path(pvc_root) if pvc_root is not None else default_pvc_root()
    return root.joinpath(parsed.authority, *segments)


def artifact_uri(output_base_uri: str, model: str, trainingjob_name: str) -> str:
    """Where a TrainingJob's artifact goes: `<base>/<model>/<trainingjob>`."""
    for part in (model, trainingjob_name):
        if not part or "/" in part or part in (".", ".."):
            raise InvalidUri(f"{part!r} is not a valid path segment")
    return f"{output_base_uri.rstrip('/')}/{model}/{trainingjob_name}"


def fetch(uri: str, dest: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Path:
    """Download a remote source into the directory `dest`; return the local file or directory.

    https:// (and http://): one file, saved as dest/<last path segment>; the header
    `Authorization: <env MLOPS_HTTP_AUTHORIZATION>` is sent when that variable is set, and
    never to another origin after a redirect.
    s3://bucket/key: the object `key` is saved as dest/<basename>; when `key` is not an object,
    every object under the prefix `key/` is saved below dest/<basename>/ and that directory is
    returned. The endpoint comes from AWS_ENDPOINT_URL (addressed path-style unless
    S3_USE_VIRTUAL_BUCKET=1|true), credentials from the usual AWS_* variables, which a pod gets
    from a Secret; without them boto3's default chain (e.g. workload identity) applies.
    """
    source = os.environ if env is None else env
    parsed = parse_uri(uri)
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    if parsed.scheme in ("https", "http"):
        return _fetch_http(uri, parsed, out, source)
    if parsed.scheme == "s3":
        return _fetch_s3(uri, parsed, out, source)
    raise InvalidUri(f"{uri!r}: fetch supports https:// and s3:// only")


def _basename(parsed: ParsedUri, default: str) -> str:
    name = PurePosixPath(urllib.parse.unquote(parsed.path.split("?", 1)[0])).name
    return name if name and name not in (".", "..") else default


def _fetch_http(uri: str, parsed: ParsedUri, out: Path, env: Mapping[str, str]) -> Path:
    """GET one file with urllib3: bounded redirects, timeouts and size.

    urllib3 drops Authorization (and Cookie) when a redirect leads to another origin: scheme,
    host and port compared with the hop it came from, so an https -> http downgrade, another
    port or another host never see the token; a same-origin redirect keeps it (issue #17).
    """
    headers = {"User-Agent": "mlops-operator"}
    if env.get(ENV_HTTP_AUTHORIZATION):
        headers["Authorization"] = env[ENV_HTTP_AUTHORIZATION]
    target = out / _basename(parsed, "download")
    retries = urllib3.Retry(
        total=HTTP_MAX_REDIRECTS,
        connect=0,
        read=0,
        status=0,
        redirect=HTTP_MAX_REDIRECTS,
        raise_on_redirect=True,
    )  # retrying transient failures is the caller's (the Job's backoff); only redirects here
    try:
        with urllib3.PoolManager(num_pools=2, maxsize=1, block=False) as pool:
            response = pool.request(
                "GET", uri, headers=headers, retries=retries, preload_content=False,
                timeout=urllib3.Timeout(connect=HTTP_CONNECT_TIMEOUT_SECONDS, read=HTTP_TIMEOUT_SECONDS),
            )  # fmt: skip
            try:
                _check_http_status(uri, response)
                _copy_capped(uri, response, target)
            finally:
                response.close()  # also an error's unread body: its socket goes with it
    except urllib3.exceptions.MaxRetryError as e:
        raise FetchError(f"GET {uri} failed: {e.reason}", transient=not _redirect_loop(e)) from e
    except (urllib3.exceptions.HTTPError, TimeoutError, ConnectionError) as e:
        raise FetchError(f"GET {uri} failed: {e}", transient=True) from e
    return target


def _redirect_loop(error: urllib3.exceptions.MaxRetryError) -> bool:
    return isinstance(error.reason, urllib3.exceptions.ResponseError) or "redirect" in str(error.reason)


def _check_http_status(uri: str, response: urllib3.BaseHTTPResponse) -> None:
    if response.status < 400:
        return
    # 408/429 and 5xx are worth retrying; other 4xx (not found, forbidden) are not.
    transient = response.status >= 500 or response.status in (408, 429)
    reason = response.reason or http.HTTPStatus(response.status).phrase
    raise FetchError(f"GET {uri} failed: HTTP {response.status} {reason}", transient=transient)


def _copy_capped(uri: str, response: urllib3.BaseHTTPResponse, target: Path) -> None:
    """Stream the body to `target`, refusing more than HTTP_MAX_BYTES (announced or sent)."""
    announced = response.headers.get("Content-Length")
    if announced and announced.isdigit() and int(announced) > HTTP_MAX_BYTES:
        raise FetchError(
            f"GET {uri} failed: {announced} bytes is over the limit of {HTTP_MAX_BYTES}", transient=False
        )
    written = 0
    with target.open("wb") as f:
        for chunk in response.stream(HTTP_CHUNK_BYTES):
            written += len(chunk)
            if written > HTTP_MAX_BYTES:
                f.close()
                target.unlink()
                raise FetchError(f"GET {uri} failed: more than {HTTP_MAX_BYTES} bytes", transient=False)
            f.write(chunk)


def _s3_client(env: Mapping[str, str]) -> Any:
    """A boto3 S3 client configured from `env`; boto3 is the optional `s3` extra.

    With AWS_ENDPOINT_URL set (MinIO, versitygw, Ceph, GCS's S3 interoperability) buckets are
    addressed path-style (`<endpoint>/<bucket>/<key>`): botocore would otherwise put the bucket
    in the host name, which such servers and cluster DNS names do not resolve. KServe's variable
    S3_USE_VIRTUAL_BUCKET=1|true selects virtual-host style instead. Without an endpoint (AWS)
    botocore's own choice applies. Timeouts and retries are bounded so a dead server fails in
    seconds, not minutes.
    """
    try:
        import boto3
        from botocore.config import Config
    except ImportError as e:
        raise FetchError(
            "s3:// needs boto3, which is not installed: pip install 'mlops-operator[s3]'", transient=False
        ) from e
    kwargs: dict[str, Any] = {}
    s3_options: dict[str, str] = {}
    if env.get(ENV_S3_ENDPOINT):
        kwargs["endpoint_url"] = env[ENV_S3_ENDPOINT]
        virtual = env.get(ENV_S3_VIRTUAL_BUCKET, "").strip().lower() in ("1", "true")
        s3_options["addressing_style"] = "virtual" if virtual else "path"
    for key, arg in (
        ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
        ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
        ("AWS_SESSION_TOKEN", "aws_session_token"),
        ("AWS_REGION", "region_name"),
    ):
        if env.get(key):
            kwargs[arg] = env[key]
    kwargs["config"] = Config(
        s3=s3_options,
        connect_timeout=S3_CONNECT_TIMEOUT_SECONDS,
        read_timeout=S3_READ_TIMEOUT_SECONDS,
        retries={"mode": "standard", "max_attempts": S3_MAX_ATTEMPTS},
        max_pool_connections=S3_MAX_POOL_CONNECTIONS,
    )
    return boto3.client("s3", **kwargs)


def _s3_error(action: str, uri: str, error: Exception) -> FetchError:
    """Name the URI and the cause; permanent for what retrying cannot fix.

    By HTTP status, not by a list of codes: S3-compatible servers name the same fault
    differently (versitygw answers an unknown access key with XAdminUserNotFound, AWS with
    InvalidAccessKeyId; both 403). 4xx is permanent except timeouts and throttling; 5xx and
    connection errors (no response at all) are transient.
    """
    if type(error).__name__ == "NoCredentialsError":  # botocore's: the whole default chain came up empty
        return FetchError(
            f"{action} {uri} failed: no S3 credentials (give the location a secretRef, or the pod a "
            "workload identity)",
            transient=False,
        )
    code, status = "", 0
    response = _s3_response(error)
    if response is not None:
        code = str(response.get("Error", {}).get("Code", ""))
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    permanent = 400 <= status < 500 and status not in (408, 429) and code not in S3_TRANSIENT_CODES
    detail = f"{code}: {error}" if code else str(error)
    return FetchError(f"{action} {uri} failed: {detail}", transient=not permanent)


def _s3_response(error: BaseException | None) -> dict[str, Any] | None:
    """The S3 answer behind `error`: boto3's upload_file wraps the ClientError that has it in an
    S3UploadFailedError without one (so a missing bucket on upload looked transient)."""
    seen = 0
    while error is not None and seen < 5:
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            return response
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def _fetch_s3(uri: str, parsed: ParsedUri, out: Path, env: Mapping[str, str]) -> Path:
    client = _s3_client(env)
    try:
        return _fetch_s3_with(client, uri, parsed, out)
    finally:
        client.close()  # its connection pool: one client per fetch, no socket left behind


def _fetch_s3_with(client: Any, uri: str, parsed: ParsedUri, out: Path) -> Path:
    key = parsed.path
    try:
        listing = _s3_list(client, parsed.bucket, key)
    except Exception as e:  # botocore raises ClientError and connection errors
        raise _s3_error("LIST", uri, e) from e
    try:
        if key and key in listing:
            target = out / _basename(parsed, "download")
            client.download_file(parsed.bucket, key, str(target))
            return target
        prefix = f"{key}/" if key else ""
        objects = [k for k in listing if k.startswith(prefix) and not k.endswith("/")]
        if not objects:
            raise FetchError(f"{uri}: no such object or prefix", transient=False, missing=True)
        root = out / _basename(parsed, parsed.bucket)
        for obj in objects:
            relative = PurePosixPath(obj[len(prefix) :])
            if ".." in relative.parts:
                continue
            target = root.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(parsed.bucket, obj, str(target))
        return root
    except FetchError:
        raise
    except Exception as e:
        raise _s3_error("GET", uri, e) from e


def _s3_list(client: Any, bucket: str, key: str) -> list[str]:
    keys: list[str] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=key):
        keys.extend(str(item["Key"]) for item in page.get("Contents", []))
    return keys


def upload_file(path: str | os.PathLike[str], uri: str, env: Mapping[str, str] | None = None) -> None:
    """Store one local file as the s3:// object `uri`."""
    source = os.environ if env is None else env
    parsed = parse_uri(uri)
    if parsed.scheme != "s3" or not parsed.path:
        raise InvalidUri(f"{uri!r}: upload_file needs an s3://<bucket>/<key> URI")
    client = _s3_client(source)
    try:
        client.upload_file(str(path), parsed.bucket, parsed.path)
    except Exception as e:
        raise _s3_error("PUT", uri, e) from e
    finally:
        client.close()


def upload(local_dir: str | os.PathLike[str], uri: str, env: Mapping[str, str] | None = None) -> None:
    """Copy every file of `local_dir` to the s3:// prefix `uri` (keys `<prefix>/<relative path>`)."""
    source = os.environ if env is None else env
    parsed = parse_uri(uri)
    if parsed.scheme != "s3":
        raise InvalidUri(f"{uri!r}: upload supports s3:// only")
    client = _s3_client(source)
    root = Path(local_dir)
    try:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            key = "/".join(filter(None, [parsed.path, *path.relative_to(root).parts]))
            client.upload_file(str(path), parsed.bucket, key)
    except Exception as e:
        raise _s3_error("PUT", uri, e) from e
    finally:
        client.close()


def _object(uri: str, action: str) -> ParsedUri:
    parsed = parse_uri(uri)
    if parsed.scheme != "s3" or not parsed.path or parsed.path.endswith("/"):
        raise InvalidUri(f"{uri!r}: {action} needs an s3://<bucket>/<key> URI")
    return parsed


def read_object(uri: str, limit: int, env: Mapping[str, str] | None = None) -> bytes | None:
    """The s3:// object `uri` (at most `limit` bytes, else a permanent error), or None when absent."""
    parsed = _object(uri, "read_object")
    client = _s3_client(os.environ if env is None else env)
    try:
        head = client.head_object(Bucket=parsed.bucket, Key=parsed.path)
        if int(head.get("ContentLength") or 0) > limit:
            raise FetchError(f"{uri}: {head['ContentLength']} bytes, more than {limit}", transient=False)
        body: bytes = client.get_object(Bucket=parsed.bucket, Key=parsed.path)["Body"].read(limit + 1)
        return body[:limit]
    except FetchError:
        raise
    except Exception as e:
        response = _s3_response(e) or {}
        if int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) == 404:
            return None
        raise _s3_error("GET", uri, e) from e
    finally:
        client.close()


def delete_object(uri: str, env: Mapping[str, str] | None = None) -> None:
    """Delete the one s3:// object `uri` (never a prefix); deleting an absent object succeeds."""
    parsed = _object(uri, "delete_object")
    client = _s3_client(os.environ if env is None else env)
    try:
        client.delete_object(Bucket=parsed.bucket, Key=parsed.path)
    except Exception as e:
        raise _s3_error("DELETE", uri, e) from e
    finally:
        client.close()
