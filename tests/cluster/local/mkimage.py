#!/usr/bin/env python3
"""Writes a one-layer container image as a `docker save` archive, without Docker or a registry.

    mkimage.py [--dir DIR] [--user UID:GID] OUT.tar NAME:TAG BINARY [ARG...]

The image holds only BINARY at /<its basename> (or DIR/<its basename>, DIR then on PATH), runs
it as its entrypoint with ARGs as the default command, as user 65532 (non-root) unless --user
says otherwise. `ctr images import OUT.tar` takes it as is. Used for the local cluster's pause
(sandbox) image and its network-check image, and for the kind node image's control-plane
images (tests/cluster/kind/node-image.sh: kubeadm's static pods run `kube-apiserver`, `etcd`,
... by name, as root, because they read root-only keys from the host).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile

EPOCH = 0  # fixed timestamps: the same binary gives the same image digest


def layer_tar(binary: str, directory: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        parts = [p for p in directory.split("/") if p]
        for i in range(len(parts)):
            info = tarfile.TarInfo("/".join(parts[: i + 1]))
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = EPOCH
            tar.addfile(info)
        info = tarfile.TarInfo("/".join([*parts, os.path.basename(binary)]))
        info.size = os.path.getsize(binary)
        info.mode = 0o755
        info.mtime = EPOCH
        with open(binary, "rb") as f:
            tar.addfile(info, f)
    return buf.getvalue()


def main(argv: list[str]) -> int:
    directory, user = "/", "65532:65532"
    while argv[:1] in (["--dir"], ["--user"]) and len(argv) > 1:
        if argv[0] == "--dir":
            directory = "/" + argv[1].strip("/")
        else:
            user = argv[1]
        argv = argv[2:]
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    out, ref, binary, *args = argv
    layer = layer_tar(binary, directory)
    entrypoint = os.path.join(directory, os.path.basename(binary))
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": [entrypoint],
            "Cmd": args or None,
            "User": user,
            "Labels": {"org.opencontainers.image.source": "mlops-operator tests/cluster/local"},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [
            {"created": "1970-01-01T00:00:00Z", "created_by": "mkimage.py " + os.path.basename(binary)}
        ],
    }
    if directory != "/":
        config["config"]["Env"] = [f"PATH={directory}"]
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
