"""Hone's training contract for Python training scripts: what a TrainingJob
pod receives (the HONE_* variables, the Dataset, Hone's split) and what it
writes (the output folder, the termination summary). No Hone code and no
third-party import but boto3, for s3:// only. Shared by examples/byo-pytorch
and examples/sklearn-tabular; an image puts it beside the script.
docs/training-contract.md is the contract itself.
"""
import csv
import hashlib
import json
import math
import os
import sys
import tempfile

MODEL_FILE = "model.pt"
ONNX_MODEL_FILE = "model.onnx"
MODEL_CARD_FILE = "model.json"
METRICS_FILE = "metrics.jsonl"
MODEL_CARD_VERSION = 1
TERMINATION_MESSAGE_MAX_BYTES = 4096


class ContractError(Exception):
    """A failure with the CamelCase reason the termination summary carries."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


def env(name, default=None):
    value = os.environ.get(name, "").strip()
    return value if value else default


def env_int(name, default):
    return int(env(name, str(default)))


def env_float(name, default):
    return float(env(name, str(default)))


def local_path(uri):
    """The local path of a file://, pvc:// URI or plain path."""
    if uri.startswith("file://"):
        return uri[len("file://"):]
    if uri.startswith("pvc://"):
        root = env("HONE_PVC_ROOT", "/mnt/pvc")
        return os.path.join(root, uri[len("pvc://"):])
    if "://" in uri:
        raise ContractError("InvalidSpec", f"{uri}: this example reads local paths, file://, pvc:// and s3://; "
                                           "use your storage's client for other schemes")
    return uri


def s3_client():
    """boto3 from the pod's AWS_* variables (the TrainingJob's secretRef)."""
    import boto3  # only s3:// needs it
    from botocore.config import Config

    region = env("AWS_REGION") or env("AWS_DEFAULT_REGION") or "us-east-1"
    # S3-compatible stores behind AWS_ENDPOINT_URL (MinIO) want path-style URLs.
    virtual = env("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false").lower() == "true"
    style = "virtual" if virtual or not env("AWS_ENDPOINT_URL") else "path"
    return boto3.client("s3", region_name=region, config=Config(s3={"addressing_style": style}))


def split_s3(uri):
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ContractError("InvalidSpec", f"{uri}: no bucket")
    return bucket, key


def storage_error(uri, e):
    """boto3's and botocore's errors as the summary's Storage reason."""
    if isinstance(e, ContractError):
        return e
    return ContractError("Storage", f"{uri}: {type(e).__name__}: {e}")


def fetch(uri, scratch):
    """A local path holding `uri`: itself, or for s3:// a download into
    `scratch` (one object, or every object under the prefix, same relative paths)."""
    if not uri.startswith("s3://"):
        return local_path(uri)
    try:
        return download(uri, scratch)
    except Exception as e:
        raise storage_error(uri, e) from e


def download(uri, scratch):
    client, (bucket, key) = s3_client(), split_s3(uri)
    name = key.rstrip("/").rsplit("/", 1)[-1] or bucket
    target = os.path.join(scratch, name)
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [obj["Key"] for page in pages for obj in page.get("Contents", []) if not obj["Key"].endswith("/")]
    if not keys:  # not a folder: one object
        os.makedirs(scratch, exist_ok=True)
        client.download_file(bucket, key, target)
        return target
    for k in keys:
        dest = os.path.join(target, *k[len(prefix):].split("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        client.download_file(bucket, k, dest)
    return target


def publish(out, output_uri):
    """Rank 0, s3:// outputs: upload every file under `out` below the output prefix."""
    if not output_uri.startswith("s3://"):
        return
    try:
        client, (bucket, key) = s3_client(), split_s3(output_uri)
        prefix = key.rstrip("/") + "/" if key.strip("/") else ""
        for folder, _, names in os.walk(out):
            for name in sorted(names):
                rel = os.path.relpath(os.path.join(folder, name), out).replace(os.sep, "/")
                client.upload_file(os.path.join(folder, name), bucket, prefix + rel)
    except Exception as e:
        raise storage_error(output_uri, e) from e


# ---------------------------------------------------------------- the split
MASK = (1 << 64) - 1


class SplitMix64:
    """Hone's split generator (trainer/src/rng.rs), so this script holds out
    the same test samples the ModelVersion is later evaluated on."""

    def __init__(self, state):
        self.state = state & MASK

    @classmethod
    def stream(cls, seed, stream):
        mixer = cls(seed ^ ((stream * 0xA24BAED4963EE407) & MASK))
        return cls(mixer.next_u64())

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, bound):
        zone = MASK - (MASK % bound)
        while True:
            v = self.next_u64()
            if v < zone:
                return v % bound

    def shuffle(self, items):
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


def seeded_split(n, validation, test, seed):
    """Seeded shuffle; the first `test` fraction is test, the next `validation` fraction validation."""
    order = list(range(n))
    SplitMix64.stream(seed, 0x57117000).shuffle(order)
    n_test = min(int(math.floor(n * min(max(test, 0.0), 1.0) + 0.5)), n)
    n_val = min(int(math.floor(n * min(max(validation, 0.0), 1.0) + 0.5)), n - n_test)
    return {"train": order[n_test + n_val:], "val": order[n_test:n_test + n_val], "test": order[:n_test]}


# ------------------------------------------------------------------ the data
def manifest_digest(entries):
    """Hone's dataset digest: sha256 over `path<TAB>size<TAB>sha256:<hex>` lines, sorted by path."""
    h = hashlib.sha256()
    for path, size, sha in sorted(entries):
        h.update(f"{path}\t{size}\tsha256:{sha}\n".encode())
    return "sha256:" + h.hexdigest()


def read_csv(source, scratch):
    """The CSV Dataset at `source` as Hone reads it: feature rows (floats),
    string labels, sorted classes, the feature names, the digest and Hone's
    seeded split (HONE_SPLIT_*), so a script holds out what Hone evaluates on."""
    path = fetch(source, scratch)
    with open(path, "rb") as f:
        raw = f.read()
    label_column = env("HONE_CSV_LABEL_COLUMN", "label")
    rows = list(csv.reader(raw.decode("utf-8").splitlines()))
    if len(rows) < 2:
        raise ContractError("InvalidData", f"{path}: no data rows")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise ContractError("InvalidData", f"{path} line 1: no column {label_column!r} in header {header}")
    named = env("HONE_CSV_FEATURE_COLUMNS")
    features = named.split(",") if named else [h for h in header if h != label_column]
    missing = [f for f in features if f not in header]
    if missing:
        raise ContractError("InvalidData", f"{path} line 1: no column {missing[0]!r} in header {header}")
    index = [header.index(f) for f in features]
    label_index = header.index(label_column)
    values, labels = [], []
    for line, row in enumerate(rows[1:], start=2):
        try:
            values.append([float(row[i]) for i in index])
            labels.append(row[label_index].strip())
        except (ValueError, IndexError) as e:  # a short row, or a feature that is not a number
            raise ContractError("InvalidData", f"{path} line {line}: {e}") from e
    name = source.rstrip("/").rsplit("/", 1)[-1]
    split = seeded_split(len(labels), env_float("HONE_SPLIT_VALIDATION", 0.1), env_float("HONE_SPLIT_TEST", 0.1),
                         env_int("HONE_SPLIT_SEED", 42))
    return {"values": values, "labels": labels, "classes": sorted(set(labels)), "feature_names": features,
            "split": split, "digest": manifest_digest([(name, len(raw), hashlib.sha256(raw).hexdigest())])}


def check_digest(digest):
    """Fails when the TrainingJob pinned another dataset digest (HONE_DATASET_DIGEST)."""
    pinned = env("HONE_DATASET_DIGEST")
    if pinned and pinned != digest:
        raise ContractError("DatasetChanged", f"dataset digest is {digest}, but the TrainingJob pinned "
                                              f"{pinned}: the data changed since verification")


def output_location(prefix):
    """(HONE_OUTPUT as a URI, the local folder to write the output in): the
    folder itself for local outputs, a scratch folder to upload from for s3://."""
    output_uri = env("HONE_OUTPUT")
    if not output_uri:
        raise ContractError("InvalidSpec", "HONE_OUTPUT is not set")
    if "://" not in output_uri:  # a local path: artifactUri must be a URI
        output_uri = "file://" + os.path.abspath(output_uri)
    scratch = tempfile.mkdtemp(prefix=prefix)  # $TMPDIR or /tmp: the pod's scratch volume
    out = os.path.join(scratch, "output") if output_uri.startswith("s3://") else local_path(output_uri)
    os.makedirs(out, exist_ok=True)
    return output_uri, out, scratch


def sha256_file(path):
    """(`sha256:<hex>`, size in bytes) of the file at `path`."""
    with open(path, "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest(), os.path.getsize(path)


def fit(summary):
    """The summary as JSON under 4 KiB: long class lists, then preprocessing,
    are left out (model.json has them; the operator falls back to the Dataset)."""
    for drop in (None, "classes", "preprocessing"):
        summary.pop(drop, None)
        text = json.dumps(summary, separators=(",", ":"))
        if len(text.encode()) <= TERMINATION_MESSAGE_MAX_BYTES:
            return text
    return text


def write_termination_log(text):
    path = env("HONE_TERMINATION_LOG", "/dev/termination-log")
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:  # not in a pod
        print(json.dumps({"event": "termination_log_unwritable", "path": path, "error": str(e)}), file=sys.stderr)


def finish(summary, out, output_uri):
    """Uploads an s3:// output, then prints and writes the summary (in that
    order: artifactUri must exist when the operator reads it)."""
    text = fit(summary)
    publish(out, output_uri)
    print(text, flush=True)
    write_termination_log(text)


def fail(e):
    """Prints and writes the error summary of `e`; returns the exit status."""
    reason = e.reason if isinstance(e, ContractError) else type(e).__name__
    message = str(e)
    while len(json.dumps({"kind": "error", "reason": reason, "message": message}).encode()) > \
            TERMINATION_MESSAGE_MAX_BYTES:
        message = message[: len(message) // 2] + "..."
    text = json.dumps({"kind": "error", "reason": reason, "message": message})
    print(text, file=sys.stderr, flush=True)
    write_termination_log(text)
    return 1
