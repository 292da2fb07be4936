#!/usr/bin/env python3
"""The demo's HTTP client: real requests to an InferenceService's router.

  client.py accuracy URL IMAGES [--min 0.95]
      POSTs every PNG under IMAGES/<label>/ to URL/predict once and prints the
      accuracy, the answering variants and versions; exits 1 below --min.
  client.py load URL IMAGES LOG [--rate 20] [--workers 4] [--seconds 600] [--stop-file F]
                 [--unusual DIR --unusual-share 0.2]
      Sends held-out digits at about --rate requests/s until --seconds pass or
      --stop-file appears, appending one JSON line per request to LOG:
      {"t": start time, "status": HTTP status or 0, "variant": x-hone-variant,
       "version": model version, "ms": latency, "ok": correct label,
       "unusual": whether it came from --unusual}. With --unusual, that share
      of the requests are images from DIR/<label>/ (inputs unlike the training
      data, such as inverted digits).
  client.py window LOG [--since T] [--until T]
      Summarises the LOG lines whose start time lies in [since, until): requests,
      failures (status not 200), wrong answers, and each per variant.

Only the standard library: it runs with any python3.
"""
import argparse
import json
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.request


def images(root):
    found = []
    for label in sorted(os.listdir(root)):
        folder = os.path.join(root, label)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.endswith(".png"):
                with open(os.path.join(folder, name), "rb") as f:
                    found.append((label, f.read()))
    if not found:
        sys.exit(f"client.py: no PNG images under {root}/<label>/")
    return found


def predict(url, body, timeout=10.0):
    """One POST /predict: (status, variant, answer or error text, latency ms)."""
    req = urllib.request.Request(
        url.rstrip("/") + "/predict", data=body, method="POST", headers={"Content-Type": "image/png"}
    )
    start = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer = json.loads(resp.read())
            return resp.status, resp.headers.get("x-hone-variant", ""), answer, (time.monotonic() - start) * 1e3
    except urllib.error.HTTPError as e:
        text = e.read().decode("utf-8", "replace")[:300]
        return e.code, e.headers.get("x-hone-variant", ""), text, (time.monotonic() - start) * 1e3
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        return 0, "", str(e), (time.monotonic() - start) * 1e3


def cmd_accuracy(args):
    data = images(args.images)
    correct, failed, variants, versions, errors = 0, 0, {}, {}, {}
    for label, body in data:
        status, variant, answer, _ = predict(args.url, body)
        if status != 200:
            failed += 1
            errors[status] = errors.get(status, 0) + 1
            if failed <= 3:
                print(f"  request failed: HTTP {status}: {answer}", file=sys.stderr)
            continue
        variants[variant] = variants.get(variant, 0) + 1
        versions[answer.get("version", "?")] = versions.get(answer.get("version", "?"), 0) + 1
        correct += answer.get("label") == label
    accuracy = correct / len(data)
    print(
        f"held-out digits: {correct}/{len(data)} correct ({accuracy:.1%}); failed requests: {failed} {errors or ''}; "
        f"variants: {variants}; model versions: {versions}"
    )
    if accuracy < args.min:
        sys.exit(f"accuracy {accuracy:.1%} is below {args.min:.0%}")


def cmd_load(args):
    data = images(args.images)
    unusual = images(args.unusual) if args.unusual else []
    deadline = time.time() + args.seconds
    interval = args.workers / args.rate
    lock = threading.Lock()
    out = open(args.log, "a", buffering=1)

    def worker(offset):
        i = offset
        # Drawn at random (seeded per worker), not every n-th request: the
        # router's weighted split is regular too, and the two would alias.
        draw = random.Random(offset)
        next_at = time.monotonic()
        while time.time() < deadline and not (args.stop_file and os.path.exists(args.stop_file)):
            odd = bool(unusual) and draw.random() < args.unusual_share
            label, body = unusual[i % len(unusual)] if odd else data[i % len(data)]
            i += args.workers
            t = time.time()
            status, variant, answer, ms = predict(args.url, body)
            ok = status == 200 and isinstance(answer, dict) and answer.get("label") == label
            version = answer.get("version", "") if isinstance(answer, dict) else ""
            line = json.dumps({"t": round(t, 3), "status": status, "variant": variant, "version": version,
                               "ms": round(ms, 2), "ok": ok, "unusual": odd})
            with lock:
                out.write(line + "\n")
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.close()


def cmd_window(args):
    since = args.since or 0.0
    until = args.until or float("inf")
    total, failed, wrong, per = 0, 0, 0, {}
    with open(args.log) as f:
        for line in f:
            r = json.loads(line)
            if not since <= r["t"] < until:
                continue
            total += 1
            v = per.setdefault(r["variant"] or "(none)", {"requests": 0, "failed": 0, "wrong": 0})
            v["requests"] += 1
            if r["status"] != 200:
                failed += 1
                v["failed"] += 1
            elif not r["ok"]:
                wrong += 1
                v["wrong"] += 1
    summary = {"requests": total, "failed": failed, "wrong": wrong,
               "failedShare": round(failed / total, 4) if total else 0.0, "perVariant": per}
    print(json.dumps(summary))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("accuracy")
    a.add_argument("url")
    a.add_argument("images")
    a.add_argument("--min", type=float, default=0.95)
    load = sub.add_parser("load")
    load.add_argument("url")
    load.add_argument("images")
    load.add_argument("log")
    load.add_argument("--rate", type=float, default=20.0)
    load.add_argument("--workers", type=int, default=4)
    load.add_argument("--seconds", type=float, default=600.0)
    load.add_argument("--stop-file")
    load.add_argument("--unusual", help="a folder of <label>/*.png unlike the training data")
    load.add_argument("--unusual-share", type=float, default=0.2)
    w = sub.add_parser("window")
    w.add_argument("log")
    w.add_argument("--since", type=float)
    w.add_argument("--until", type=float)
    args = p.parse_args()
    {"accuracy": cmd_accuracy, "load": cmd_load, "window": cmd_window}[args.cmd](args)


if __name__ == "__main__":
    main()
