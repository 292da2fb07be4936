#!/usr/bin/env python3
"""PyTorch training loops for a side-by-side with hone-trainer.

Two data paths over the same ImageFolder data, the same network (simple-cnn:
4 x Conv3x3-BN-ReLU-MaxPool2 and a 512-128-classes classifier; or ResNet-18
as torchvision builds it), Adam, and the same seeded split fractions:

- `--mode preload`: every image decoded once into a uint8 tensor; each step
  indexes a batch, scales and normalises it. The same kernels as
  hone-trainer, so the honest comparison.
- `--mode dataloader`: what people run today: a Dataset that decodes each PNG
  with PIL, and a torch DataLoader with `--workers` processes.

Prints one JSON line: training samples/second (training loop only, over the
epochs after the first) and the final test accuracy.
"""
import argparse
import json
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset


def load(root, path, size, channels):
    img = Image.open(os.path.join(root, path)).convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


class Folder(Dataset):
    def __init__(self, a, items, mean, std):
        self.a, self.items, self.mean, self.std = a, items, mean, std

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        x = torch.from_numpy(load(self.a.data, path, self.a.size, self.a.channels).astype(np.float32) / 255.0)
        return (x - self.mean) / self.std, label


def simple_cnn(channels, size, classes):
    layers, c = [], channels
    for out in (32, 64, 128, 256):
        layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
        c = out
    flat = 256 * (size // 16) ** 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(flat, 512), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(512, 128), nn.ReLU(), nn.Linear(128, classes))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
        return torch.relu(y + (x if self.down is None else self.down(x)))


def resnet18(channels, classes):
    layers, c = [], 64
    for out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(c, out, stride), Block(out, out, 1)]
        c = out
    return nn.Sequential(nn.Conv2d(channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.MaxPool2d(3, 2, 1), *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(512, classes))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--mode", choices=["preload", "dataloader"], default="preload")
    p.add_argument("--arch", choices=["simple-cnn", "resnet18"], default="simple-cnn")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    classes = sorted(d for d in os.listdir(a.data) if os.path.isdir(os.path.join(a.data, d)))
    items = [(os.path.join(c, f), i) for i, c in enumerate(classes) for f in sorted(os.listdir(os.path.join(a.data, c)))]
    random.shuffle(items)
    n_test = n_val = round(len(items) * 0.1)
    test, val, train = items[:n_test], items[n_test:n_test + n_val], items[n_test + n_val:]
    # Normalisation statistics from the training split, as hone-trainer does.
    train_u8 = torch.from_numpy(np.stack([load(a.data, pth, a.size, a.channels) for pth, _ in train]))
    scaled = train_u8.float() / 255.0
    mean = scaled.mean(dim=(0, 2, 3), keepdim=True)[0]
    std = scaled.std(dim=(0, 2, 3), keepdim=True, unbiased=False)[0].clamp_min(1e-6)
    del scaled
    train_y = torch.tensor([label for _, label in train])
    model = simple_cnn(a.channels, a.size, len(classes)) if a.arch == "simple-cnn" else resnet18(a.channels, len(classes))
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    epoch_seconds = []
    if a.mode == "dataloader":
        del train_u8
        loader = DataLoader(Folder(a, train, mean, std), batch_size=a.batch_size, shuffle=True,
                            num_workers=a.workers, persistent_workers=a.workers > 0)
    for _ in range(a.epochs):
        model.train()
        start = time.perf_counter()
        if a.mode == "preload":
            perm = torch.randperm(len(train))
            for i in range(0, len(train), a.batch_size):
                idx = perm[i:i + a.batch_size]
                step((train_u8[idx].float() / 255.0 - mean) / std, train_y[idx])
        else:
            for x, y in loader:
                step(x, y)
        epoch_seconds.append(time.perf_counter() - start)
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(test), 256):
            chunk = test[i:i + 256]
            x = torch.from_numpy(np.stack([load(a.data, pth, a.size, a.channels) for pth, _ in chunk]))
            y = torch.tensor([label for _, label in chunk])
            correct += (model((x.float() / 255.0 - mean) / std).argmax(1) == y).sum().item()
    # Steady state: the epochs after the first (which pays one-time set-up), as
    # bench/trainer/run.sh measures hone-trainer.
    steady = epoch_seconds[1:] or epoch_seconds
    print(json.dumps({"samples_per_second": len(train) * len(steady) / sum(steady),
                      "test_accuracy": correct / max(len(test), 1), "train_seconds": sum(epoch_seconds)}))


if __name__ == "__main__":
    main()
