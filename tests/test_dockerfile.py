"""The Dockerfile's COPY lines carry every package pyproject.toml lists: the wheel is built
from exactly the copied files (docker itself cannot run here), so a new package dir left out
of the image fails this test instead of the image build."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_lines(dockerfile: Path):
    """(sources, destination) of every COPY instruction, continuation lines joined."""
    text = dockerfile.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        words = shlex.split(line.strip(), comments=True)
        if words and words[0].upper() == "COPY":
            args = [w for w in words[1:] if not w.startswith("--")]
            yield args[:-1], args[-1]


def stage_build_context(dest: Path) -> None:
    """Lay out what the image's WORKDIR holds after its COPY lines (WORKDIR-relative dests)."""
    for sources, target in copy_lines(REPO / "Dockerfile"):
        for src in sources:
            path = REPO / src
            to = dest / target / Path(src).name if target.endswith("/") else dest / target
            if path.is_dir():
                shutil.copytree(path, to, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, to)


def test_dockerfile_copies_every_package(tmp_path):
    context = tmp_path / "context"
    stage_build_context(context)
    assert (context / "pyproject.toml").is_file(), "the Dockerfile does not copy pyproject.toml"
    out = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(context)], capture_output=True, text=True)
    assert build.returncode == 0, f"pip wheel on the Dockerfile's files failed:\n{build.stderr[-3000:]}"
    (wheel,) = out.glob("optmodel-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    missing = [p for p in packages if f"{p.replace('.', '/')}/__init__.py" not in names
               and not any(n.startswith(p.replace(".", "/") + "/") for n in names)]
    assert not missing, f"packages pyproject.toml lists but the image lacks: {missing}"
    # conf/ ships as optmodel/conf (Hydra's config path inside an installed optmodel)
    assert "optmodel/conf/config.yaml" in names
    assert any(n.startswith("optmodel/assets/tiny_models/") for n in names)
