#!/usr/bin/env python3
"""Writes one of the demo's two wrong models, both made from a good one.

  broken_model.py MODE BASE_MODEL_PT BASE_MODEL_JSON OUT_DIR [--modelversion BASE_MV_JSON --name N --uri URI]

MODE `permuted`: the base model's weights, unchanged, with its class order
permuted in model.json: it answers every request with HTTP 200 and high
confidence, and is wrong on (nearly) every one. A smoke test that only
checks for answers passes it; Hone's measured evaluation on the held-out
test split finds its accuracy near zero, so `track` never serves it.

MODE `unusual`: a wrapper that answers like the base model on inputs like
the training data (dark background, bright strokes) and, on inputs unlike
it (light images, such as inverted digits), answers the first class with
near certainty: HTTP 200, confident, wrong. It passes the measured
evaluation, whose test split holds none, and fails on the live traffic the
demo client sends, where the shadow step's comparison with the stable
version must catch it before any user is answered by it.

Either way model.json is the base model's card with the changes above and
the new artifact digest. With --modelversion (the base ModelVersion as JSON)
it also writes OUT_DIR/modelversion.json: a ModelVersion NAME for URI with
the next version number, the new digest and signature, the base's lineage
(so it is evaluated on the same held-out split) and the base's metrics (the
trainer's claims, which gates ignore).
"""
import argparse
import hashlib
import json
import os
import shutil
import sys

import torch

# Mean raw intensity (in [0, 1]) above which `unusual` raises: the demo's
# digits average about 0.25, inverted ones about 0.75.
UNUSUAL_MEAN = 0.5


class WrongOnUnusual(torch.nn.Module):
    def __init__(self, base, threshold: float, classes: int):
        super().__init__()
        self.base = base
        self.threshold = threshold
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        light = x.flatten(1).mean(dim=1) > self.threshold
        # Logits that put about 0.9999 on class 0.
        wrong = torch.full_like(out, -10.0)
        wrong[:, 0] = 10.0
        return torch.where(light.unsqueeze(1), wrong, out)


def modelversion(base_mv, name, uri, digest, signature):
    spec = base_mv["spec"]
    lineage = spec.get("lineage", {})
    return {
        "apiVersion": "hone.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "hone-demo"}},
        "spec": {
            "model": spec["model"],
            "version": int(name.rsplit("-v", 1)[1]),
            "artifact": {
                "uri": uri,
                "format": "TorchScript",
                "digest": digest,
                "secretRef": spec["artifact"].get("secretRef"),
            },
            "signature": signature,
            "lineage": {k: lineage[k] for k in ("dataset", "datasetDigest") if lineage.get(k)},
            "metrics": spec.get("metrics", {}),
        },
    }


def sha256(path):
    with open(path, "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["permuted", "unusual"])
    p.add_argument("base_pt")
    p.add_argument("base_json")
    p.add_argument("out")
    p.add_argument("--modelversion", help="the base ModelVersion, as JSON (kubectl get -o json)")
    p.add_argument("--name", help="name of the new ModelVersion, <model>-v<version>")
    p.add_argument("--uri", help="where model.pt will be uploaded")
    args = p.parse_args()
    with open(args.base_json) as f:
        card = json.load(f)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "model.pt")
    shape = [1] + list(card["signature"]["inputShape"])
    if args.mode == "permuted":
        shutil.copyfile(args.base_pt, path)
        classes = card["signature"]["classes"]
        # Every index names the next class: confident, and always wrong.
        card["signature"]["classes"] = classes[1:] + classes[:1]
    else:
        pre = card["signature"].get("preprocessing") or {}
        mean, std = (pre.get("mean") or [0.0])[0], (pre.get("std") or [1.0])[0]
        threshold = (UNUSUAL_MEAN - mean) / std  # in the normalised space the model sees
        classes = len(card["signature"]["classes"])
        module = torch.jit.script(WrongOnUnusual(torch.jit.load(args.base_pt, map_location="cpu"), threshold, classes))
        torch.jit.save(module, path)
        module.eval()
        with torch.no_grad():
            dark = torch.full(shape, (0.2 - mean) / std)
            if not torch.equal(module(dark), module.base(dark)):
                sys.exit("the wrong model changed an answer on a dark image")
            light = torch.softmax(module(torch.full(shape, (0.8 - mean) / std)), dim=1)
            if float(light[0, 0]) < 0.99:
                sys.exit("the wrong model is not confident on a light image")
    digest = sha256(path)
    card["artifactDigest"] = digest
    with open(os.path.join(args.out, "model.json"), "w") as f:
        json.dump(card, f, indent=2)
    if args.modelversion:
        if not (args.name and args.uri):
            sys.exit("--modelversion needs --name and --uri")
        with open(args.modelversion) as f:
            base_mv = json.load(f)
        mv = modelversion(base_mv, args.name, args.uri, digest, card["signature"])
        with open(os.path.join(args.out, "modelversion.json"), "w") as f:
            json.dump(mv, f, indent=2)
    print(digest)


if __name__ == "__main__":
    main()
