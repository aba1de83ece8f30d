#!/usr/bin/env python3
"""Writes a one-layer container image as a `docker save` archive, without Docker or a registry.

    mkimage.py OUT.tar NAME:TAG BINARY [ARG...]

The image holds only BINARY at /<its basename>, runs it as its entrypoint with ARGs as the
default command, as user 65532 (non-root). `ctr images import OUT.tar` takes it as is. Used for
the local cluster's pause (sandbox) image and its network-check image.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile

EPOCH = 0  # fixed timestamps: the same binary gives the same image digest


def layer_tar(binary: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(os.path.basename(binary))
        info.size = os.path.getsize(binary)
        info.mode = 0o755
        info.mtime = EPOCH
        with open(binary, "rb") as f:
            tar.addfile(info, f)
    return buf.getvalue()


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    out, ref, binary, *args = argv
    layer = layer_tar(binary)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": ["/" + os.path.basename(binary)],
            "Cmd": args or None,
            "User": "65532:65532",
            "Labels": {"org.opencontainers.image.source": "mlops-operator tests/cluster/local"},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [
            {"created": "1970-01-01T00:00:00Z", "created_by": "mkimage.py " + os.path.basename(binary)}
        ],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": [layer_name]}]).encode()
    tmp = out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((config_name, config_bytes), (layer_name, layer), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = EPOCH
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)
    print(f"{ref} -> {out} ({len(layer) // 1024} KiB layer)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
