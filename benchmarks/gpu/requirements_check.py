"""Are the carried packages the ones importing, and are their requirements met where they run?

    python benchmarks/gpu/requirements_check.py NAME==VERSION ...   # prints one JSON line

For each NAME==VERSION (the wheelhouse's list): the version Python resolves must be VERSION
(the wheel, not an older copy earlier on sys.path), and each of its requirements that applies
here must be satisfied by the installed version (what `pip check` does, over sys.path as this
process sees it, so the device's own packages and the carried ones count together).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


def installed(name: str):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def problems(wanted):
    out = []
    for line in wanted:
        name, version = line.split("==")
        found = installed(name)
        if found is None or canonicalize_name(found) != canonicalize_name(version):
            out.append(f"{name}: {found or 'not installed'} imports, the wheelhouse holds {version}")
            continue
        for text in md.requires(name) or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            have = installed(req.name)
            if have is None:
                out.append(f"{name} {version} needs {req}, not installed")
            elif not req.specifier.contains(Version(have), prereleases=True):
                out.append(f"{name} {version} needs {req}, {req.name} {have} is installed")
    return out


if __name__ == "__main__":
    wanted = sys.argv[1:]
    print(json.dumps({"checked": len(wanted), "problems": problems(wanted)}))
