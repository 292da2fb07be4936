#!/usr/bin/env python3
"""The PyTorch training loop people run today, for a side-by-side with hone-trainer.

An ImageFolder-style Dataset decoding PNGs with PIL, a torch DataLoader, the
same simple-cnn (4 x Conv3x3-BN-ReLU-MaxPool2, classifier 512-128-classes),
Adam, the same seeded split fractions. Prints one JSON line with training
samples/second (training loop only) and final test accuracy.
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


class Folder(Dataset):
    def __init__(self, root, items, size, mean, std):
        self.root, self.items, self.size, self.mean, self.std = root, items, size, mean, std

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        img = Image.open(os.path.join(self.root, path)).convert("L").resize((self.size, self.size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).unsqueeze(0)
        return (x - self.mean) / self.std, label


def simple_cnn(channels, size, classes):
    layers, c = [], channels
    for out in (32, 64, 128, 256):
        layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
        c = out
    flat = 256 * (size // 16) ** 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(flat, 512), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(512, 128), nn.ReLU(), nn.Linear(128, classes))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--size", type=int, default=32)
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
    pixels = np.stack([np.asarray(Image.open(os.path.join(a.data, pth)).convert("L").resize((a.size, a.size)), dtype=np.float32) / 255.0 for pth, _ in train])
    mean, std = float(pixels.mean()), float(pixels.std())
    mk = lambda its, shuffle: DataLoader(Folder(a.data, its, a.size, mean, std), batch_size=a.batch_size,
                                         shuffle=shuffle, num_workers=a.workers)
    train_dl, test_dl = mk(train, True), mk(test, False)
    model = simple_cnn(1, a.size, len(classes))
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    loss_fn = nn.CrossEntropyLoss()
    train_seconds = 0.0
    for _ in range(a.epochs):
        model.train()
        start = time.perf_counter()
        for x, y in train_dl:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
        train_seconds += time.perf_counter() - start
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in test_dl:
            correct += (model(x).argmax(1) == y).sum().item()
    print(json.dumps({"samples_per_second": len(train) * a.epochs / train_seconds,
                      "test_accuracy": correct / len(test), "train_seconds": train_seconds}))


if __name__ == "__main__":
    main()
