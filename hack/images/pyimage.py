#!/usr/bin/env python3
"""Writes the layer specs of a Python image (for oci.py) from the running
interpreter: run it with the Python whose packages the image should carry
(the project's venv, so the torch wheel that tch uses).

It takes what `pip install --distributions` installed, and what importing
--modules (then running --warm) loads:
  - every file of each distribution in the install closure of --distributions
    (their Requires-Dist, recursively: what pip installed for them), less
    --exclude-distributions and headers, static libraries and CMake files,
    so a lazy import (sympy from torch's optimizers) finds its package;
  - every top-level package under site-packages that a loaded module came
    from, whole;
  - every shared library mapped into the process (/proc/self/maps) from
    site-packages (the CUDA libraries torch's wheel links, numpy's OpenBLAS);
  - the interpreter, libpython, the standard library (minus its tests, IDLE
    and tkinter), lib-dynload, and the system libraries `ldd` resolves for
    every ELF file above.

Layout in the image, under --prefix (default /opt/python):
    bin/python3.11, bin/python3, bin/python    the interpreter
    lib/python3.11/                            the standard library
    lib/libpython3.11.so.1.0                   when the interpreter has one
    site-packages/                             the packages, same relative paths
                                               (torch finds nvidia/* by RUNPATH)
System libraries go to the paths ldd printed. Python files keep their
modification times (the `!keep-mtime` directive), so the __pycache__ files
the venv already has stay valid in a read-only root filesystem.

Writes SPEC_DIR/python.spec (interpreter, stdlib, system libraries) and
SPEC_DIR/packages.spec (site-packages), and prints the image's environment as
JSON (PATH, PYTHONHOME, PYTHONPATH, LD_LIBRARY_PATH).
"""
import argparse
import importlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import sysconfig

SKIP_PACKAGE_PARTS = ("/include/", "/share/cmake/", "/tests/", "/testing/_internal/data/")
SKIP_SUFFIXES = (".a", ".h", ".hpp", ".cuh", ".pyi")
# The GPU driver's libraries come from the node (the NVIDIA container toolkit
# mounts them), never from the image.
DRIVER_LIBS = {"libcuda.so.1", "libnvidia-ml.so.1"}
SKIP_STDLIB_TOP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages",
                   "config-3.11-x86_64-linux-gnu", "__phello__"}


def is_elf(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def walk_files(root, skip_top=()):
    for folder, dirs, names in os.walk(root):
        if folder == root:
            dirs[:] = [d for d in dirs if d not in skip_top]
        dirs.sort()
        for name in sorted(names):
            yield os.path.join(folder, name)


def install_closure(names, excluded):
    """Distribution names pip installed for `names`: their Requires-Dist
    (markers without extras taken as true), recursively."""
    seen, stack = set(), list(names)
    while stack:
        try:
            dist = importlib.metadata.distribution(stack.pop())
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement for another platform or Python
        name = dist.metadata["Name"].lower().replace("_", "-")
        if name in seen or name in excluded:
            continue
        seen.add(name)
        for req in dist.requires or []:
            if "extra ==" not in req:
                stack.append(re.split(r"[ ;<>=!\[~(]", req, maxsplit=1)[0])
    return sorted(seen)


def ldd(path, libpath):
    """(soname, resolved path) pairs, and the names ldd could not find."""
    env = dict(os.environ, LD_LIBRARY_PATH=libpath)
    out = subprocess.run(["ldd", path], env=env, capture_output=True, text=True).stdout
    found, missing = [], []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts:
            name, target = parts[0], parts[parts.index("=>") + 1]
            if target == "not":
                missing.append(name)
            elif target.startswith("/"):
                found.append((name, target))
        elif parts and parts[0].startswith("/"):
            found.append((parts[0], parts[0]))  # the dynamic loader, at its absolute path
    return found, missing


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--distributions", required=True, help="comma-separated distributions to install")
    ap.add_argument("--exclude-distributions", default="", help="comma-separated distributions to leave out")
    ap.add_argument("--modules", required=True, help="comma-separated modules to import")
    ap.add_argument("--warm", default="", help="Python code run after the imports (lazy imports)")
    ap.add_argument("--prefix", default="/opt/python")
    ap.add_argument("--spec-dir", required=True)
    args = ap.parse_args()

    for name in args.modules.split(","):
        importlib.import_module(name.strip())
    if args.warm:
        exec(args.warm, {})  # noqa: S102 - the build's own snippet

    site = sysconfig.get_paths()["purelib"]
    stdlib = sysconfig.get_paths()["stdlib"]
    # (platstdlib names the venv, which has no lib-dynload of its own.)
    dynload = sysconfig.get_config_var("DESTSHARED") or os.path.join(stdlib, "lib-dynload")
    prefix = args.prefix.rstrip("/")
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    image_site = f"{prefix}/site-packages"
    image_stdlib = f"{prefix}/lib/{ver}"

    tops = set()
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", None) or ""
        if f.startswith(site + os.sep):
            tops.add(os.path.relpath(f, site).split(os.sep)[0])
    mapped = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            p = line.split()[-1]
            if p.startswith("/") and ".so" in p:
                mapped.add(p)

    packages = {}  # dest -> src

    def keep(rel):
        return not (any(part in "/" + rel for part in SKIP_PACKAGE_PARTS) or rel.endswith(SKIP_SUFFIXES)
                    or any(c.isspace() for c in rel))  # specs split on whitespace

    excluded = {d.strip().lower() for d in args.exclude_distributions.split(",") if d.strip()}
    for name in install_closure([d.strip() for d in args.distributions.split(",")], excluded):
        for f in importlib.metadata.distribution(name).files or []:
            src = os.path.normpath(os.path.join(site, str(f)))
            rel = os.path.relpath(src, site)
            if not rel.startswith("..") and keep(rel) and os.path.isfile(src):  # not ../../bin/torchrun
                packages[f"{image_site}/{rel}"] = src
    for top in sorted(tops):
        src = os.path.join(site, top)
        files = walk_files(src) if os.path.isdir(src) else [src]
        for f in files:
            rel = os.path.relpath(f, site)
            if keep(rel) and os.path.isfile(f):
                packages[f"{image_site}/{rel}"] = f
    for lib in sorted(mapped):
        if lib.startswith(site + os.sep):
            packages[f"{image_site}/{os.path.relpath(lib, site)}"] = lib

    python = {}
    exe = os.path.realpath(sys.executable)
    for name in (ver, "python3", "python"):
        python[f"{prefix}/bin/{name}"] = exe
    for f in walk_files(stdlib, SKIP_STDLIB_TOP):
        if os.path.isfile(f) and not f.startswith(dynload + os.sep):
            python[f"{image_stdlib}/{os.path.relpath(f, stdlib)}"] = f
    libpython_dir = sysconfig.get_config_var("LIBDIR") or ""
    elves = [exe] + [src for src in packages.values() if src.endswith(".so") or ".so." in src]
    libpath = ":".join(sorted({os.path.dirname(e) for e in elves} | {libpython_dir}))
    for f in walk_files(dynload):
        _, missing = ldd(f, libpath)
        if missing:  # e.g. _tkinter without Tk: that module is simply absent
            continue
        python[f"{image_stdlib}/lib-dynload/{os.path.basename(f)}"] = f
        elves.append(f)

    system, unresolved, plugins = {}, set(), []
    for elf in elves:
        if not is_elf(elf):
            continue
        found, missing = ldd(elf, libpath)
        missing = [m for m in missing if m not in DRIVER_LIBS]
        if missing and elf not in mapped:
            # A plugin nothing loaded, for a library this machine lacks
            # (nvshmem's MPI and UCX transports): it could not load in the
            # image either, so it is left out.
            plugins.append(elf)
            continue
        unresolved.update(f"{os.path.basename(elf)}: {m}" for m in missing)
        for name, path in found:
            if path.startswith(site + os.sep):
                continue  # shipped with its package
            if libpython_dir and path.startswith(libpython_dir + os.sep) and name.startswith("libpython"):
                python[f"{prefix}/lib/{name}"] = path
            elif path.startswith("/"):
                system[path if path.startswith("/lib64/") else os.path.join(os.path.dirname(path), name)] = path
    if unresolved:
        sys.exit("pyimage: ldd could not resolve:\n  " + "\n  ".join(sorted(unresolved)))
    packages = {dest: src for dest, src in packages.items() if src not in plugins}
    if plugins:
        print(f"pyimage: left out {len(plugins)} plugins whose libraries are missing: "
              + ", ".join(sorted(os.path.basename(p) for p in plugins)), file=sys.stderr)

    os.makedirs(args.spec_dir, exist_ok=True)
    with open(os.path.join(args.spec_dir, "python.spec"), "w") as out:
        out.write("!keep-mtime\n")
        for dest, src in sorted({**system, **python}.items()):
            out.write(f"{dest} {src}\n")
    with open(os.path.join(args.spec_dir, "packages.spec"), "w") as out:
        out.write("!keep-mtime\n")
        for dest, src in sorted(packages.items()):
            out.write(f"{dest} {src}\n")
    print(json.dumps({
        "PATH": f"{prefix}/bin:/usr/local/bin:/usr/bin:/bin",
        "PYTHONHOME": prefix,
        "PYTHONPATH": image_site,
        "LD_LIBRARY_PATH": f"{prefix}/lib",
        "PYTHONUNBUFFERED": "1",
    }))


if __name__ == "__main__":
    main()
