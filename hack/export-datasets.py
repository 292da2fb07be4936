#!/usr/bin/env python3
"""Exports datasets that scikit-learn ships (no download) in the layouts Hone reads.

  digits/   ImageFolder: one folder per class, 32x32 grayscale PNGs (the 8x8
            digits scaled up with bilinear filtering), 1797 images
  iris.csv, wine.csv, breast_cancer.csv: CSV with a header row and a `label` column
  diabetes.csv: the same, its `label` a number (disease progression after a
            year, 442 patients): a regression target

With --holdout F, a seeded fraction F of the digits (stratified by class)
goes to digits-holdout/ instead of digits/: images no training run sees, for
checking a served model (the demo classifies them through the router).

Usage: export-datasets.py OUT_DIR [--only digits,iris,...] [--holdout 0.1 --seed 7]
"""
import argparse
import csv
import os

import numpy as np
from PIL import Image
from sklearn import datasets


def export_digits(out, holdout=0.0, seed=7):
    digits = datasets.load_digits()
    root = os.path.join(out, "digits")
    held = set()
    if holdout > 0:
        rng = np.random.default_rng(seed)
        for label in range(10):
            members = np.flatnonzero(digits.target == label)
            count = int(round(len(members) * holdout))
            held.update(int(i) for i in rng.choice(members, size=count, replace=False))
    for folder in ["digits", "digits-holdout"] if held else ["digits"]:
        for label in range(10):
            os.makedirs(os.path.join(out, folder, str(label)), exist_ok=True)
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        img = Image.fromarray(np.uint8(np.clip(pixels * (255.0 / 16.0), 0, 255)), mode="L")
        img = img.resize((32, 32), Image.BILINEAR)
        folder = "digits-holdout" if i in held else "digits"
        img.save(os.path.join(out, folder, str(label), f"{i:04d}.png"), optimize=False)
    return root


def export_table(out, name, bunch, label_names=None):
    path = os.path.join(out, f"{name}.csv")
    features = [f.replace(" ", "_").replace("(", "").replace(")", "") for f in bunch.feature_names]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(features + ["label"])
        for row, target in zip(bunch.data, bunch.target):
            label = repr(float(target)) if label_names is None else label_names[target]
            w.writerow([repr(float(v)) for v in row] + [label])
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--only", default="digits,iris,wine,breast_cancer,diabetes")
    parser.add_argument("--holdout", type=float, default=0.0, help="fraction of the digits kept out of digits/")
    parser.add_argument("--seed", type=int, default=7, help="seed of the holdout choice")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    only = set(args.only.split(","))
    if "digits" in only:
        if not 0.0 <= args.holdout < 1.0:
            parser.error("--holdout must be in [0, 1)")
        print(export_digits(args.out, args.holdout, args.seed))
    if "iris" in only:
        iris = datasets.load_iris()
        print(export_table(args.out, "iris", iris, list(iris.target_names)))
    if "wine" in only:
        wine = datasets.load_wine()
        print(export_table(args.out, "wine", wine, list(wine.target_names)))
    if "breast_cancer" in only:
        bc = datasets.load_breast_cancer()
        print(export_table(args.out, "breast_cancer", bc, list(bc.target_names)))
    if "diabetes" in only:
        print(export_table(args.out, "diabetes", datasets.load_diabetes()))


if __name__ == "__main__":
    main()
