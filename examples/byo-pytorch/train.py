#!/usr/bin/env python3
"""A plain PyTorch trainer that honours Hone's training contract.

No Hone code (hone_contract.py, beside it in the image, is plain Python
that reads and writes the contract): it reads the HONE_* variables a TrainingJob pod receives,
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
import hashlib
import json
import math
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

# hone_contract.py: beside this script in the image, in ../common in the repository.
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from hone_contract import (  # noqa: E402
    METRICS_FILE, MODEL_CARD_FILE, MODEL_CARD_VERSION, MODEL_FILE, ContractError, check_digest, env, env_float,
    env_int, fail, fetch, finish, manifest_digest, output_location, read_csv, seeded_split, sha256_file,
)

IMAGE_EXTENSIONS = {"png", "jpg", "jpeg"}
SPLIT_FOLDERS = {"train", "val", "validation", "test"}
EVAL_BATCH = 512


def load_csv(source, scratch):
    table = read_csv(source, scratch)
    classes = table["classes"]
    return {"kind": "tabular", "inputs": torch.tensor(table["values"], dtype=torch.float32),
            "labels": torch.tensor([classes.index(label) for label in table["labels"]]), "classes": classes,
            "split": table["split"], "feature_names": table["feature_names"], "digest": table["digest"]}


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
    check_digest(data["digest"])
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


def main():
    ranks = None
    try:
        if env("HONE_THREADS"):
            torch.set_num_threads(env_int("HONE_THREADS", 1))
        ranks = Ranks()
        output_uri, out, scratch = output_location("byo-")
        data = load_dataset(os.path.join(scratch, "dataset"))
        mean, std = normalise(data)
        model, history = train(data, ranks, out)
        if ranks.rank == 0:
            finish(export(model, data, history, mean, std, out, output_uri), out, output_uri)
        # Other ranks write nothing: the operator registers rank 0's summary.
        ranks.close()
        return 0
    except Exception as e:  # every failure ends as an error summary
        return fail(e)


if __name__ == "__main__":
    sys.exit(main())
