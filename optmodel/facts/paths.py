"""Where the package finds its config tree and bundled assets, from a checkout or a wheel."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # optmodel/
ASSETS_DIR = PACKAGE_DIR / "assets"
CORPUS_DIR = ASSETS_DIR / "corpus"
TINY_MODELS_DIR = ASSETS_DIR / "tiny_models"


def conf_dir() -> Path:
    """The Hydra config tree: `optmodel/conf` inside a wheel install (pyproject maps `conf/`
    there), else `conf/` beside the package in a checkout or editable install."""
    for candidate in (PACKAGE_DIR / "conf", PACKAGE_DIR.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"optmodel's config tree is missing: looked for config.yaml in {PACKAGE_DIR.parent / 'conf'} "
        f"and {PACKAGE_DIR / 'conf'}. Reinstall the package (pip install .)."
    )
