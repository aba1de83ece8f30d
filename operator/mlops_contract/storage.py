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

import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

DEFAULT_PVC_ROOT: Final = "/mnt/pvc"
ENV_PVC_ROOT: Final = "MLOPS_PVC_ROOT"
ENV_HTTP_AUTHORIZATION: Final = "MLOPS_HTTP_AUTHORIZATION"
ENV_S3_ENDPOINT: Final = "AWS_ENDPOINT_URL"
SCHEMES: Final = ("builtin", "pvc", "s3", "https", "http")
HTTP_TIMEOUT_SECONDS: Final = 60.0


class InvalidUri(ValueError):
    """The URI is malformed, has an unsupported scheme or escapes its volume."""


class FetchError(Exception):
    """Downloading or uploading failed; `transient` says whether retrying may succeed."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


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
    `Authorization: <env MLOPS_HTTP_AUTHORIZATION>` is sent when that variable is set.
    s3://bucket/key: the object `key` is saved as dest/<basename>; when `key` is not an object,
    every object under the prefix `key/` is saved below dest/<basename>/ and that directory is
    returned. The endpoint comes from AWS_ENDPOINT_URL, credentials from the usual AWS_* variables.
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
    headers = {"User-Agent": "mlops-operator"}
    if env.get(ENV_HTTP_AUTHORIZATION):
        headers["Authorization"] = env[ENV_HTTP_AUTHORIZATION]
    request = urllib.request.Request(uri, headers=headers)  # noqa: S310  # the scheme is checked by parse_uri
    target = out / _basename(parsed, "download")
    try:
        with (
            urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response,  # noqa: S310
            target.open("wb") as f,
        ):
            shutil.copyfileobj(response, f)
    except urllib.error.HTTPError as e:
        # 408/429 and 5xx are worth retrying; other 4xx (not found, forbidden) are not.
        transient = e.code >= 500 or e.code in (408, 429)
        e.close()  # an HTTPError holds the open response
        raise FetchError(f"GET {uri} failed: HTTP {e.code} {e.reason}", transient=transient) from e
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise FetchError(f"GET {uri} failed: {reason}", transient=True) from e
    return target


def _s3_client(env: Mapping[str, str]) -> Any:
    """A boto3 S3 client configured from `env`; boto3 is the optional `s3` extra."""
    try:
        import boto3
    except ImportError as e:
        raise FetchError(
            "s3:// needs boto3, which is not installed: pip install 'mlops-operator[s3]'", transient=False
        ) from e
    kwargs: dict[str, Any] = {}
    if env.get(ENV_S3_ENDPOINT):
        kwargs["endpoint_url"] = env[ENV_S3_ENDPOINT]
    for key, arg in (
        ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
        ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
        ("AWS_SESSION_TOKEN", "aws_session_token"),
        ("AWS_REGION", "region_name"),
    ):
        if env.get(key):
            kwargs[arg] = env[key]
    return boto3.client("s3", **kwargs)


def _s3_error(action: str, uri: str, error: Exception) -> FetchError:
    code = ""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
    permanent = code in ("NoSuchKey", "NoSuchBucket", "404", "403", "AccessDenied", "InvalidAccessKeyId")
    detail = f"{code}: {error}" if code else str(error)
    return FetchError(f"{action} {uri} failed: {detail}", transient=not permanent)


def _fetch_s3(uri: str, parsed: ParsedUri, out: Path, env: Mapping[str, str]) -> Path:
    client = _s3_client(env)
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
            raise FetchError(f"{uri}: no such object or prefix", transient=False)
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
