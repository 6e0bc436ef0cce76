"""The wheels the GPU machine lacks: optmodel's runtime closure minus the device image's packages.

Walks the requirements of the packages optmodel imports (pyproject `dependencies`, with the
exclusions below) through the metadata of this machine's environment, evaluating markers for
the device (CPython 3.12, Linux x86-64), and stops at every package the device image already
holds (`device_packages.txt`, read off the device tool's package list). A device package is
carried anyway when its known version breaks a requirement of something carried (the device's
tokenizers 0.23.2 against transformers 5.14.1's `<=0.23.0`). Versions come from
constraints.txt, the set CI tests.

    python benchmarks/gpu/missing.py [--kinds-md KINDS.md]   # prints NAME==VERSION lines

Run by wheelhouse.sh; `--kinds-md` refreshes device_packages.txt from the tool's KINDS.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path
from typing import Dict, Optional, Set

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEVICE_PACKAGES = HERE / "device_packages.txt"

# The device: Python 3.12.3 (/opt/torch/.venv), x86-64 Linux.
DEVICE_ENV = {
    "python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
    "platform_machine": "x86_64", "os_name": "posix", "platform_release": "", "platform_version": "",
    "implementation_version": "3.12.3",
}

# Not carried, with the reason (the check runs none of their paths):
EXCLUDED = {
    "wandb": "imported only with logger=wandb; the check logs to the console and manifest",
}
# nvidia-modelopt's [hf] extra adds deepspeed, diffusers, nltk, wonderwords, ...: ModelOpt
# imports each plugin only when its library imports, and the checked paths need none of them
# beyond transformers / accelerate / peft / datasets, which come in on their own.
DROP_EXTRAS = {"nvidia-modelopt"}


def device_packages(kinds_md: Optional[Path]) -> Dict[str, Optional[str]]:
    """{canonical name: known version or None} of the device image."""
    if kinds_md is not None:
        text = kinds_md.read_text()
        names = re.search(r"Packages: (.*?)\.\s*$", text, re.S | re.M).group(1)
        listed = re.search(r"filtered by the names it asked for: (.*?) \|", text)
        versions = dict(pair.rsplit(" ", 1) for pair in listed.group(1).split(", ")) if listed else {}
        versions = {canonicalize_name(k): v for k, v in versions.items()}
        lines = [f"{n}=={versions[canonicalize_name(n)]}" if canonicalize_name(n) in versions else n
                 for n in (x.strip() for x in names.split(","))]
        DEVICE_PACKAGES.write_text("# The GPU machine's Python packages (device tool KINDS.md; versions where it gives them)\n"
                                   + "\n".join(sorted(lines, key=str.lower)) + "\n")
    out: Dict[str, Optional[str]] = {}
    for line in DEVICE_PACKAGES.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.strip().partition("==")
            out[canonicalize_name(name)] = version or None
    return out


def pins() -> Dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            out[canonicalize_name(name)] = version.strip()
    return out


def roots():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        req = Requirement(dep)
        if canonicalize_name(req.name) in EXCLUDED:
            continue
        if canonicalize_name(req.name) in DROP_EXTRAS:
            req.extras = set()
        yield req


def applies(req: Requirement, extras: Set[str]) -> bool:
    if req.marker is None:
        return True
    return any(Marker(str(req.marker)).evaluate({**DEVICE_ENV, "extra": e}) for e in (extras or {""}))


def missing(device: Dict[str, Optional[str]]) -> Dict[str, str]:
    pinned, carry = pins(), {}
    todo = [(req, set(req.extras)) for req in roots()]
    seen: Set[str] = set()
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if name in device:
            known = device[name]
            if known is None or req.specifier.contains(Version(known), prereleases=True):
                continue  # the device's own copy satisfies it (or its version is not known: checked there)
        if name in seen:
            continue
        seen.add(name)
        if name not in pinned:
            sys.exit(f"{req.name} is needed on the device but has no pin in constraints.txt")
        carry[name] = pinned[name]
        for sub in md.requires(req.name) or []:
            sub_req = Requirement(sub)
            if applies(sub_req, extras):
                todo.append((sub_req, set(sub_req.extras)))
    return dict(sorted(carry.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds-md", type=Path, help="the device tool's KINDS.md: refresh device_packages.txt")
    args = parser.parse_args()
    for name, version in missing(device_packages(args.kinds_md)).items():
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
