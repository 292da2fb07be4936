#!/usr/bin/env python3
"""Writes the demo's broken model: a working TorchScript model wrapped so that
it raises on every real input.

  broken_model.py BASE_MODEL_PT BASE_MODEL_JSON OUT_DIR [--modelversion BASE_MV_JSON --name N --uri URI]

The wrapper answers all-zero inputs (what `hone-predictor verify` runs) through
the base model, so the ModelVersion passes verification, and raises on any
other input, so every live request it gets is an HTTP 500: a model that looks
fine to a smoke test and breaks in production. Its model.json is the base
model's card with the new artifact digest; the demo registers it with the
base model's metrics, so the InferenceService's `track` picks it up and rolls
it out as a canary, which the live analysis must then abort.

With --modelversion (the base ModelVersion as JSON), it also writes
OUT_DIR/modelversion.json: a ModelVersion NAME for URI with the next version
number, the new digest, and the base's signature, lineage and metrics.
"""
import argparse
import hashlib
import json
import os
import sys

import torch


class Broken(torch.nn.Module):
    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(torch.any(x != 0)):
            raise RuntimeError("this model was exported broken on purpose (hone demo): it fails on real input")
        return self.base(x)


def modelversion(base_mv, name, uri, digest):
    spec = base_mv["spec"]
    return {
        "apiVersion": "hone.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "hone-demo"}},
        "spec": {
            "model": spec["model"],
            "version": spec["version"] + 1,
            "artifact": {
                "uri": uri,
                "format": "TorchScript",
                "digest": digest,
                "secretRef": spec["artifact"].get("secretRef"),
            },
            "signature": spec["signature"],
            "lineage": {"dataset": spec.get("lineage", {}).get("dataset")},
            "metrics": spec.get("metrics", {}),
        },
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base_pt")
    p.add_argument("base_json")
    p.add_argument("out")
    p.add_argument("--modelversion", help="the base ModelVersion, as JSON (kubectl get -o json)")
    p.add_argument("--name", help="name of the new ModelVersion")
    p.add_argument("--uri", help="where model.pt will be uploaded")
    args = p.parse_args()
    base_pt, base_json, out = args.base_pt, args.base_json, args.out
    base = torch.jit.load(base_pt, map_location="cpu")
    module = torch.jit.script(Broken(base))
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "model.pt")
    torch.jit.save(module, path)
    with open(path, "rb") as f:
        digest = "sha256:" + hashlib.sha256(f.read()).hexdigest()
    with open(base_json) as f:
        card = json.load(f)
    card["artifactDigest"] = digest
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(card, f, indent=2)
    # Check both behaviours before anything is uploaded.
    shape = [1] + list(card["signature"]["inputShape"])
    module.eval()
    with torch.no_grad():
        module(torch.zeros(shape))
        try:
            module(torch.ones(shape))
        except Exception:  # noqa: BLE001 - TorchScript raises torch.jit.Error
            pass
        else:
            sys.exit("the broken model answered a real input")
    if args.modelversion:
        if not (args.name and args.uri):
            sys.exit("--modelversion needs --name and --uri")
        with open(args.modelversion) as f:
            base_mv = json.load(f)
        with open(os.path.join(out, "modelversion.json"), "w") as f:
            json.dump(modelversion(base_mv, args.name, args.uri, digest), f, indent=2)
    print(digest)


if __name__ == "__main__":
    main()
