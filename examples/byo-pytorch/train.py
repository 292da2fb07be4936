#!/usr/bin/env python3
"""A plain PyTorch trainer that honours Hone's training contract.

No Hone imports: it reads the HONE_* variables a TrainingJob pod receives,
trains on the Dataset (CSV with a label column, or an ImageFolder), and
rank 0 writes what docs/training-contract.md asks for under HONE_OUTPUT:
model.pt (TorchScript), model.json (the model card), metrics.jsonl, and the
termination summary at HONE_TERMINATION_LOG.

With WORLD_SIZE > 1 (the operator's `workers > 1`, or torchrun) it joins a
torch.distributed process group (gloo on CPU, nccl on CUDA) and trains with
DistributedDataParallel: each rank reads its shard of every epoch.

Storage: HONE_DATASET_SOURCE and HONE_OUTPUT may be local paths, file://,
pvc:// or s3:// URIs. s3:// goes through boto3 with the standard AWS_*
variables (AWS_ENDPOINT_URL for MinIO and other S3-compatible stores); the
dataset is downloaded to a scratch folder and rank 0 uploads its output
before it writes the summary. gs:// and az:// need your own client.

Run it locally:
    python train.py                              # one process
    torchrun --nproc-per-node 2 train.py         # two ranks on gloo
"""
import csv
import hashlib
import json
import math
import os
import sys
import tempfile
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

MODEL_FILE = "model.pt"
MODEL_CARD_FILE = "model.json"
METRICS_FILE = "metrics.jsonl"
MODEL_CARD_VERSION = 1
TERMINATION_MESSAGE_MAX_BYTES = 4096
IMAGE_EXTENSIONS = {"png", "jpg", "jpeg"}
SPLIT_FOLDERS = {"train", "val", "validation", "test"}
EVAL_BATCH = 512


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


def load_csv(source, scratch):
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
    values, labels = [], []
    for line, row in enumerate(rows[1:], start=2):
        try:
            values.append([float(row[i]) for i in index])
        except (ValueError, IndexError) as e:
            raise ContractError("InvalidData", f"{path} line {line}: {e}") from e
        labels.append(row[header.index(label_column)].strip())
    classes = sorted(set(labels))
    name = source.rstrip("/").rsplit("/", 1)[-1]
    digest = manifest_digest([(name, len(raw), hashlib.sha256(raw).hexdigest())])
    inputs = torch.tensor(values, dtype=torch.float32)
    targets = torch.tensor([classes.index(label) for label in labels])
    split = seeded_split(len(labels), env_float("HONE_SPLIT_VALIDATION", 0.1), env_float("HONE_SPLIT_TEST", 0.1),
                         env_int("HONE_SPLIT_SEED", 42))
    return {"kind": "tabular", "inputs": inputs, "labels": targets, "classes": classes, "split": split,
            "feature_names": features, "digest": digest}


def load_image_folder(source, scratch):
    from PIL import Image  # only image datasets need Pillow

    root = fetch(source, scratch)
    width, height = env_int("HONE_IMAGE_WIDTH", 224), env_int("HONE_IMAGE_HEIGHT", 224)
    channels = env_int("HONE_IMAGE_CHANNELS", 3)
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                files.append(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    files.sort()
    top = {f.split("/")[0] for f in files if "/" in f}
    folder_split = "train" in top and top <= SPLIT_FOLDERS
    samples = []  # (relative path, class, split folder)
    for rel in files:
        parts = rel.split("/")
        if len(parts) == 1:
            continue  # a README beside the class folders
        if len(parts) != (3 if folder_split else 2):
            raise ContractError("InvalidData", f"{rel}: expected <class>/<image> or train|val|test/<class>/<image>")
        if rel.rsplit(".", 1)[-1].lower() not in IMAGE_EXTENSIONS:
            raise ContractError("InvalidData", f"{rel}: unsupported file type (expected png, jpg or jpeg)")
        samples.append((rel, parts[-2], parts[0] if folder_split else None))
    if not samples:
        raise ContractError("InvalidData", f"{source}: no images found (expected <class>/<image> folders)")
    classes = sorted({c for _, c, _ in samples})
    pixels, labels, manifest = [], [], []
    mode = "L" if channels == 1 else "RGB"
    for rel, cls, _ in samples:
        with open(os.path.join(root, rel), "rb") as f:
            raw = f.read()
        manifest.append((rel, len(raw), hashlib.sha256(raw).hexdigest()))
        with Image.open(os.path.join(root, rel)) as img:
            img = img.convert(mode).resize((width, height), Image.BILINEAR)
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        pixels.append(data.view(height, width, channels).permute(2, 0, 1))
        labels.append(classes.index(cls))
    if folder_split:
        which = {"train": "train", "val": "val", "validation": "val"}
        split = {"train": [], "val": [], "test": []}
        for i, (_, _, folder) in enumerate(samples):
            split[which.get(folder, "test")].append(i)
    else:
        split = seeded_split(len(samples), env_float("HONE_SPLIT_VALIDATION", 0.1),
                             env_float("HONE_SPLIT_TEST", 0.1), env_int("HONE_SPLIT_SEED", 42))
    inputs = torch.stack(pixels).float() / 255.0
    return {"kind": "image", "inputs": inputs, "labels": torch.tensor(labels), "classes": classes, "split": split,
            "feature_names": [], "digest": manifest_digest(manifest)}


def load_dataset(scratch):
    source = env("HONE_DATASET_SOURCE")
    if not source:
        raise ContractError("InvalidSpec", "HONE_DATASET_SOURCE is not set")
    fmt = env("HONE_DATASET_FORMAT", "CSV")
    try:
        data = load_csv(source, scratch) if fmt == "CSV" else load_image_folder(source, scratch)
    except OSError as e:
        raise ContractError("Storage", f"reading {source}: {e}") from e
    pinned = env("HONE_DATASET_DIGEST")
    if pinned and pinned != data["digest"]:
        raise ContractError("DatasetChanged", f"dataset digest is {data['digest']}, but the TrainingJob pinned "
                                              f"{pinned}: the data changed since verification")
    return data


def normalise(data):
    """Per-feature (or per-channel) mean and std of the training split; the
    predictor applies the same from model.json's preprocessing."""
    train = data["inputs"][data["split"]["train"]]
    dims = [0] if data["kind"] == "tabular" else [0, 2, 3]
    mean = train.mean(dim=dims)
    std = train.std(dim=dims, unbiased=False).clamp_min(1e-6)
    shape = [1, -1] if data["kind"] == "tabular" else [1, -1, 1, 1]
    data["inputs"] = (data["inputs"] - mean.view(shape)) / std.view(shape)
    return [float(v) for v in mean], [float(v) for v in std]


# ----------------------------------------------------------------- the model
def build_model(data):
    classes = len(data["classes"])
    if data["kind"] == "tabular":
        features = data["inputs"].shape[1]
        return nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                             nn.Linear(64, classes))
    channels = data["inputs"].shape[1]
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        nn.Flatten(), nn.Linear(32 * 16, classes))


def build_optimizer(params, lr, weight_decay):
    name = env("HONE_OPTIMIZER", "adam")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def lr_factor(step, total_steps, warmup_steps):
    """HONE_SCHEDULER after HONE_WARMUP_EPOCHS of linear warm-up: none, cosine or step."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    scheduler = env("HONE_SCHEDULER", "none")
    if scheduler == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if scheduler == "step":
        return 0.1 ** min(2, int(progress * 3))
    return 1.0


# ------------------------------------------------------------ distribution
class Ranks:
    """This process's place in the run: WORLD_SIZE and RANK come from the
    operator (workers > 1) or torchrun, MASTER_ADDR/MASTER_PORT with them."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = env("HONE_DEVICE", "cpu") in ("cuda", "auto") and torch.cuda.is_available()
        if env("HONE_DEVICE") == "cuda" and not cuda:
            raise ContractError("InvalidSpec", "HONE_DEVICE is cuda but torch sees no GPU")
        self.device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
        if self.world > 1:
            dist.init_process_group("nccl" if cuda else "gloo", init_method="env://")

    def sums(self, values):
        """Sums `values` over every rank (a no-op for one process)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def close(self):
        if self.world > 1:
            dist.barrier()
            dist.destroy_process_group()


def evaluate_sums(model, data, indices, device):
    """Loss sum, correct answers and count over `indices`."""
    loss, correct = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(indices), EVAL_BATCH):
            idx = indices[start:start + EVAL_BATCH]
            x, y = data["inputs"][idx].to(device), data["labels"][idx].to(device)
            logits = model(x)
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
    return [loss, float(correct), float(len(indices))]


def train(data, ranks, out):
    epochs, batch = env_int("HONE_EPOCHS", 10), env_int("HONE_BATCH_SIZE", 32)
    lr, weight_decay = env_float("HONE_LEARNING_RATE", 0.001), env_float("HONE_WEIGHT_DECAY", 0.0)
    seed = env_int("HONE_SEED", 42)
    torch.manual_seed(seed)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
    model = build_model(data).to(ranks.device)
    net = DistributedDataParallel(model) if ranks.world > 1 else model
    optimizer = build_optimizer(net.parameters(), lr, weight_decay)
    train_idx = data["split"]["train"]
    dataset = TensorDataset(data["inputs"][train_idx], data["labels"][train_idx])
    # Each rank reads its shard of a seeded per-epoch permutation; batch is per rank.
    sampler = DistributedSampler(dataset, num_replicas=ranks.world, rank=ranks.rank, shuffle=True, seed=seed)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler)
    total_steps = epochs * len(loader)
    warmup_steps = env_int("HONE_WARMUP_EPOCHS", 0) * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup_steps))
    val_share = data["split"]["val"][ranks.rank::ranks.world]
    history = []
    if ranks.rank == 0:
        open(os.path.join(out, METRICS_FILE), "w").close()
    for epoch in range(1, epochs + 1):
        started = time.monotonic()
        sampler.set_epoch(epoch)
        net.train()
        loss_sum, correct, seen, epoch_lr = 0.0, 0, 0, optimizer.param_groups[0]["lr"]
        for x, y in loader:
            x, y = x.to(ranks.device), y.to(ranks.device)
            logits = net(x)
            loss = nn.functional.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()  # DDP all-reduces the gradients here
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(-1) == y).sum())
            seen += len(y)
        train_loss, train_correct, train_seen = ranks.sums([loss_sum, correct, seen])
        val_loss, val_correct, val_seen = ranks.sums(evaluate_sums(model, data, val_share, ranks.device))
        metrics = {
            "epoch": epoch,
            "trainLoss": train_loss / train_seen,
            "trainAccuracy": train_correct / train_seen,
            "valLoss": val_loss / val_seen if val_seen else float("nan"),
            "valAccuracy": val_correct / val_seen if val_seen else float("nan"),
            "learningRate": epoch_lr,
            "samplesPerSecond": train_seen / max(time.monotonic() - started, 1e-9),
        }
        history.append(metrics)
        if ranks.rank == 0:
            # One EpochMetrics per line; JSON has no NaN, so an empty validation split writes 0.
            line = {k: (0.0 if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
            with open(os.path.join(out, METRICS_FILE), "a") as f:
                f.write(json.dumps(line) + "\n")
            print(json.dumps({"event": "epoch", **line}), flush=True)
    return model, history


# ---------------------------------------------------------------- the output
def sha256_file(path):
    with open(path, "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest(), os.path.getsize(path)


def export(model, data, history, mean, std, out, output_uri):
    """Rank 0: model.pt, model.json, and the training summary (returned)."""
    model = model.to("cpu").eval()
    final = {}
    for split in ("val", "test"):
        loss, correct, n = evaluate_sums(model, data, data["split"][split], torch.device("cpu"))
        if n:
            final[f"{split}_loss"], final[f"{split}_accuracy"] = loss / n, correct / n
    final["train_loss"], final["train_accuracy"] = history[-1]["trainLoss"], history[-1]["trainAccuracy"]
    final["epochs"] = float(len(history))
    final = {k: round(v, 6) for k, v in final.items() if math.isfinite(v)}

    module_path = os.path.join(out, MODEL_FILE)
    torch.jit.script(model).save(module_path)  # TorchScript: libtorch loads it without this code
    artifact_digest, artifact_size = sha256_file(module_path)
    shape = list(data["inputs"].shape[1:])
    preprocessing = {"mean": mean, "std": std}
    if data["kind"] == "image":
        preprocessing["resize"] = [shape[1], shape[2]]
    card = {
        "formatVersion": MODEL_CARD_VERSION,
        "input": data["kind"],
        "signature": {"inputShape": shape, "classes": data["classes"], "preprocessing": preprocessing},
        "architecture": "byo-" + ("mlp" if data["kind"] == "tabular" else "cnn"),
        "metrics": final,
        "datasetDigest": data["digest"],
        "artifactDigest": artifact_digest,
    }
    if data["feature_names"]:
        card["featureNames"] = data["feature_names"]
    card_path = os.path.join(out, MODEL_CARD_FILE)
    with open(card_path, "w") as f:
        json.dump(card, f, indent=2)
    card_digest, _ = sha256_file(card_path)
    if env("BYO_EXPORT_ONNX") == "1":
        export_onnx(model, data, card, out)
    return {
        "kind": "train",
        "epoch": len(history),
        "totalEpochs": env_int("HONE_EPOCHS", 10),
        "metrics": final,
        "artifactUri": output_uri.rstrip("/") + "/" + MODEL_FILE,
        "artifactDigest": artifact_digest,
        "artifactSizeBytes": artifact_size,
        "cardDigest": card_digest,
        "datasetDigest": data["digest"],
        "inputShape": shape,
        "classes": data["classes"],
        "preprocessing": preprocessing,
    }


def export_onnx(model, data, card, out):
    """The same weights as ONNX in out/onnx/ (model.onnx and its own
    model.json), for a ModelVersion with `artifact.format: ONNX`."""
    folder = os.path.join(out, "onnx")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.onnx")
    # The TorchScript-based exporter needs only the onnx package; the batch axis stays dynamic.
    torch.onnx.export(model, (data["inputs"][:1],), path, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    digest, _ = sha256_file(path)
    with open(os.path.join(folder, MODEL_CARD_FILE), "w") as f:
        json.dump(dict(card, artifactDigest=digest), f, indent=2)


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


def main():
    ranks = None
    try:
        if env("HONE_THREADS"):
            torch.set_num_threads(env_int("HONE_THREADS", 1))
        ranks = Ranks()
        output_uri = env("HONE_OUTPUT")
        if not output_uri:
            raise ContractError("InvalidSpec", "HONE_OUTPUT is not set")
        if "://" not in output_uri:  # a local path: artifactUri must be a URI
            output_uri = "file://" + os.path.abspath(output_uri)
        scratch = tempfile.mkdtemp(prefix="byo-")  # $TMPDIR or /tmp: the pod's scratch volume
        out = os.path.join(scratch, "output") if output_uri.startswith("s3://") else local_path(output_uri)
        os.makedirs(out, exist_ok=True)
        data = load_dataset(os.path.join(scratch, "dataset"))
        mean, std = normalise(data)
        model, history = train(data, ranks, out)
        if ranks.rank == 0:
            summary = fit(export(model, data, history, mean, std, out, output_uri))
            publish(out, output_uri)  # before the summary: artifactUri must exist when it is read
            print(summary, flush=True)
            write_termination_log(summary)
        # Other ranks write nothing: the operator registers rank 0's summary.
        ranks.close()
        return 0
    except Exception as e:  # every failure ends as an error summary
        reason = e.reason if isinstance(e, ContractError) else type(e).__name__
        message = str(e)
        while len(json.dumps({"kind": "error", "reason": reason, "message": message}).encode()) > \
                TERMINATION_MESSAGE_MAX_BYTES:
            message = message[: len(message) // 2] + "..."
        text = json.dumps({"kind": "error", "reason": reason, "message": message})
        print(text, file=sys.stderr, flush=True)
        write_termination_log(text)
        return 1


if __name__ == "__main__":
    sys.exit(main())
