"""Builds one image with podman and records what was built.

    python images/build.py cpu|gpu|tpu [--base IMAGE] [--context DIR]

The tag is the one the compiled YAML names (components/common/images.py: one version,
registry prefix from $KFP_CT_REGISTRY). ``--base`` is passed as the Dockerfiles' BASE
build argument (``make image`` passes the local debootstrap base; without it the
Dockerfile's public default is used); ``--ca`` mounts a CA bundle over the image's for
the build's downloads (a TLS-inspecting proxy). The result goes to ``build/images.json``: tag,
image id, digest, size, build seconds, base. ``make image`` is the usual way in.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from kfp_ct.components import __version__  # noqa: E402
from kfp_ct.components.common import images  # noqa: E402

TAGS = {"cpu": images.CPU_IMAGE, "gpu": images.GPU_IMAGE, "tpu": images.TPU_IMAGE}
RECORD = os.path.join(ROOT, "build", "images.json")


def podman() -> list[str]:
    found = shutil.which("podman")
    if not found:
        sys.exit("podman not found: `make podman` installs it (Debian packages podman, runc, "
                 "debootstrap)")
    return [found] if os.geteuid() == 0 else ["sudo", found]


def inspect(tag: str) -> dict:
    done = subprocess.run(podman() + ["image", "inspect", tag], capture_output=True, text=True)
    if done.returncode != 0:
        return {}
    info = json.loads(done.stdout)[0]
    return {"id": info["Id"], "digest": info.get("Digest", ""), "size_bytes": info["Size"],
            "user": info.get("Config", {}).get("User", ""),
            "version_label": info.get("Labels", {}).get("org.opencontainers.image.version")}


def build(variant: str, base: str = "", context: str = ROOT, ca: str = "") -> dict:
    tag = TAGS[variant]
    if "@" in tag:
        sys.exit(f"{tag}: a digest cannot be built; unset $KFP_CT_IMAGE_DIGESTS to build")
    cmd = podman() + ["build", "--file", os.path.join(ROOT, "images", f"{variant}.Dockerfile"),
                      "--build-arg", f"VERSION={__version__}", "--tag", tag]
    if base:
        cmd += ["--build-arg", f"BASE={base}"]
    if ca:  # during RUN steps only; never committed to a layer
        cmd += ["--volume", f"{os.path.realpath(ca)}:/etc/ssl/certs/ca-certificates.crt:ro"]
    cmd.append(context)
    print("+ " + " ".join(cmd), flush=True)
    started = time.perf_counter()
    done = subprocess.run(cmd)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"building {tag} failed (exit {done.returncode}) after {seconds:.0f} s")
    record = {"tag": tag, "build_s": round(seconds, 1), "base": base or "(Dockerfile default)",
              **inspect(tag)}
    os.makedirs(os.path.dirname(RECORD), exist_ok=True)
    try:
        with open(RECORD) as f:
            everything = json.load(f)
    except (OSError, ValueError):
        everything = {}
    everything[variant] = record
    with open(RECORD, "w") as f:
        json.dump(everything, f, indent=1, sort_keys=True)
    print(f"built {tag} in {seconds:.1f} s: {record.get('size_bytes', 0) / 1e9:.2f} GB, "
          f"id {record.get('id', '?')[:12]}, user {record.get('user')!r}; recorded in "
          f"{os.path.relpath(RECORD, ROOT)}")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=sorted(TAGS))
    parser.add_argument("--base", default="", help="BASE build argument (default: the "
                                                   "Dockerfile's public base)")
    parser.add_argument("--context", default=ROOT, help="build context folder")
    parser.add_argument("--ca", default="", help="a CA bundle the build's downloads trust "
                                                 "(mounted over the image's during RUN steps)")
    args = parser.parse_args(argv)
    build(args.variant, args.base, args.context, args.ca)
    return 0


if __name__ == "__main__":
    sys.exit(main())
