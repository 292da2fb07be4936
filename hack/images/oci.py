#!/usr/bin/env python3
"""Writes an OCI image archive (an OCI image layout in a tar) without a
container daemon, for `ctr images import`.

Layers are plain (uncompressed) tars written deterministically: entries in
sorted order, owner 0:0, mtime 0, no extended attributes. The same files give
the same layer digest on every build, so containerd's content store (and its
snapshots) dedupe a layer that did not change, such as libtorch.

Each layer is described by a spec file, one entry a line:
    DEST SRC [MODE]    a file from SRC (symlinks followed) at DEST in the image
    DEST/ - [MODE]     an empty directory (e.g. /tmp with mode 1777)
    DEST @TARGET       a symlink DEST -> TARGET
    !keep-mtime        (a line of its own) files keep their modification
                       times, e.g. so Python's __pycache__ files stay valid
Blobs are cached under --cache (blobs/sha256/<hex>), keyed by a fingerprint
of the spec and each source's path, size and mtime, so an unchanged layer is
neither re-read nor re-hashed. --omit FILE lists digests (sha256:<hex>, one a
line) that the importer already holds: their blobs are left out of the
archive (the manifest still names them), which makes re-imports cheap.
Prints the manifest digest.
"""
import argparse
import hashlib
import io
import json
import os
import sys
import tarfile

LAYER_MT = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MT = "application/vnd.oci.image.config.v1+json"
MANIFEST_MT = "application/vnd.oci.image.manifest.v1+json"
INDEX_MT = "application/vnd.oci.image.index.v1+json"


def parse_spec(path):
    """(entries, keep_mtime)."""
    entries, keep_mtime = [], False
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line == "!keep-mtime":
                keep_mtime = True
                continue
            parts = line.split()
            if len(parts) not in (2, 3):
                sys.exit(f"{path}:{n}: expected 'DEST SRC [MODE]', got {line!r}")
            dest, src = parts[0], parts[1]
            mode = int(parts[2], 8) if len(parts) == 3 else None
            if not dest.startswith("/"):
                sys.exit(f"{path}:{n}: DEST must be absolute: {dest}")
            entries.append((dest, src, mode))
    return entries, keep_mtime


def fingerprint(entries, keep_mtime):
    h = hashlib.sha256(b"hone-oci-layer-v1\n" + (b"keep-mtime\n" if keep_mtime else b""))
    for dest, src, mode in entries:
        h.update(f"{dest}\0{src}\0{mode}\0".encode())
        if src not in ("-",) and not src.startswith("@"):
            st = os.stat(src)
            h.update(f"{os.path.realpath(src)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_mode}\n".encode())
    return h.hexdigest()


class HashingWriter(io.RawIOBase):
    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def writable(self):
        return True

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)


def write_layer(entries, keep_mtime, blobs):
    """Writes the layer tar into blobs/, returns (digest, size)."""
    tmp = os.path.join(blobs, f".layer.{os.getpid()}.tmp")
    # Parent directories of every entry, so extraction never invents modes.
    dirs = {}
    for dest, src, mode in entries:
        p = os.path.dirname(dest.rstrip("/"))
        while p not in ("/", ""):
            dirs.setdefault(p, 0o755)
            p = os.path.dirname(p)
    items = []
    for d, m in dirs.items():
        items.append((d, "-", m))
    for dest, src, mode in entries:
        if src == "-":
            items = [i for i in items if i[0] != dest.rstrip("/")]
            items.append((dest.rstrip("/"), "-", mode if mode is not None else 0o755))
        else:
            items.append((dest, src, mode))
    items.sort(key=lambda i: i[0])
    with open(tmp, "wb") as raw:
        w = HashingWriter(raw)
        with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for dest, src, mode in items:
                ti = tarfile.TarInfo(dest.lstrip("/"))
                ti.uid = ti.gid = 0
                ti.uname = ti.gname = ""
                ti.mtime = 0
                if src == "-":
                    ti.type, ti.mode = tarfile.DIRTYPE, mode
                    tar.addfile(ti)
                elif src.startswith("@"):
                    ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, src[1:], 0o777
                    tar.addfile(ti)
                else:
                    st = os.stat(src)
                    ti.size = st.st_size
                    ti.mode = mode if mode is not None else (st.st_mode & 0o7777)
                    if keep_mtime:
                        ti.mtime = int(st.st_mtime)
                    with open(src, "rb") as f:
                        tar.addfile(ti, f)
    digest = "sha256:" + w.h.hexdigest()
    os.replace(tmp, os.path.join(blobs, w.h.hexdigest()))
    return digest, w.n


def put_blob(blobs, data):
    hexd = hashlib.sha256(data).hexdigest()
    path = os.path.join(blobs, hexd)
    if not os.path.exists(path):
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
    return "sha256:" + hexd, len(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="image name, e.g. hone.local/pause:1")
    ap.add_argument("--layer", action="append", default=[], help="layer spec file (bottom first)")
    ap.add_argument("--config", default="{}", help="JSON for the image config's 'config' (User, Env, Entrypoint...)")
    ap.add_argument("--cache", required=True, help="cache dir for blobs and layer fingerprints")
    ap.add_argument("--omit", help="file of digests to leave out of the archive")
    ap.add_argument("--out", required=True, help="the OCI archive (tar) to write")
    args = ap.parse_args()

    blobs = os.path.join(args.cache, "blobs", "sha256")
    fps = os.path.join(args.cache, "layers")
    os.makedirs(blobs, exist_ok=True)
    os.makedirs(fps, exist_ok=True)

    layers = []
    for spec in args.layer:
        entries, keep_mtime = parse_spec(spec)
        fp = fingerprint(entries, keep_mtime)
        rec = os.path.join(fps, fp)
        desc = None
        if os.path.exists(rec):
            with open(rec, encoding="utf-8") as f:
                desc = json.load(f)
            if not os.path.exists(os.path.join(blobs, desc["digest"].split(":", 1)[1])):
                desc = None
        if desc is None:
            digest, size = write_layer(entries, keep_mtime, blobs)
            desc = {"mediaType": LAYER_MT, "digest": digest, "size": size}
            with open(rec + ".tmp", "w", encoding="utf-8") as f:
                json.dump(desc, f)
            os.replace(rec + ".tmp", rec)
            print(f"oci: layer {os.path.basename(spec)}: wrote {digest[:19]} ({size / 1e6:.1f} MB)", file=sys.stderr)
        else:
            print(f"oci: layer {os.path.basename(spec)}: cached {desc['digest'][:19]} ({desc['size'] / 1e6:.1f} MB)", file=sys.stderr)
        layers.append(desc)

    cfg = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": json.loads(args.config),
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
    }
    cfg_digest, cfg_size = put_blob(blobs, json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MT,
        "config": {"mediaType": CONFIG_MT, "digest": cfg_digest, "size": cfg_size},
        "layers": layers,
    }
    man_digest, man_size = put_blob(blobs, json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())
    tag = args.name.rsplit(":", 1)[1] if ":" in args.name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_MT,
        "manifests": [{
            "mediaType": MANIFEST_MT, "digest": man_digest, "size": man_size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": args.name, "org.opencontainers.image.ref.name": tag},
        }],
    }
    omit = set()
    if args.omit and os.path.exists(args.omit):
        with open(args.omit, encoding="utf-8") as f:
            omit = {line.strip() for line in f if line.strip()}

    tmp = args.out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        def add_bytes(name, data):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
            tar.addfile(ti, io.BytesIO(data))
        add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes("index.json", json.dumps(index, sort_keys=True).encode())
        for d in [layer["digest"] for layer in layers] + [cfg_digest, man_digest]:
            if d in omit and d not in (cfg_digest, man_digest):
                continue
            hexd = d.split(":", 1)[1]
            tar.add(os.path.join(blobs, hexd), arcname=f"blobs/sha256/{hexd}")
    os.replace(tmp, args.out)
    print(man_digest)


if __name__ == "__main__":
    main()
