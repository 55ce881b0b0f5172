"""Imports run one way (web -> shared <- worker, training -> shared); the web process never loads torch, nor the
image decoders (it serves thumbnails the workers made)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT

# Module prefixes each side must not import (a prefix matches the module and its submodules).
FORBIDDEN = {
    "web": {"worker", "training", "pixelproof", "torch", "torchvision", "shared.modeling", "shared.imaging",
            "shared.evidence"},
    "shared": {"web", "worker", "training", "pixelproof"},
    "training": {"web", "worker", "pixelproof"},
    "worker": {"web", "training", "pixelproof"},
}
# The console command is the composition root: it may reach every side, but only inside the command that needs
# it, so `pixelproof submit` never loads torch and the web's start never loads the worker.
LAZY_ONLY = {"pixelproof": {"torch", "torchvision", "worker", "training", "web", "shared.modeling", "shared.imaging"}}


def imported_modules(path: Path, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def _hits(modules: set[str], forbidden: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package):
    bad = {}
    for path in (REPO_ROOT / package).rglob("*.py"):
        hits = _hits(imported_modules(path), FORBIDDEN[package])
        if hits:
            bad[str(path.relative_to(REPO_ROOT))] = hits
    assert not bad, f"{package}/ imports what it must not: {bad}"


def test_the_console_command_imports_each_side_lazily():
    bad = {}
    for package, forbidden in LAZY_ONLY.items():
        for path in (REPO_ROOT / package).rglob("*.py"):
            hits = _hits(imported_modules(path, top_level_only=True), forbidden)
            if hits:
                bad[str(path.relative_to(REPO_ROOT))] = hits
    assert not bad, f"imported at module level, where only a command's own function should: {bad}"


def test_the_rules_see_submodules():
    """The check itself: a submodule import is caught, a sibling with a shared prefix is not."""
    assert _hits({"shared.modeling.checkpoint", "shared.models", "shared.imaging"}, {"shared.modeling", "shared.imaging"}) \
        == ["shared.imaging", "shared.modeling.checkpoint"]


def test_web_process_does_not_import_torch(tmp_path):
    code = (
        "import os, sys; os.environ['REDIS_URL']='redis://127.0.0.1:1/0';"
        f"os.environ['PIXELPROOF_DATA_DIR']={str(tmp_path)!r};"
        "import web.wsgi; app = web.wsgi.app; c = app.test_client(); c.get('/'); c.get('/api/openapi.json');"
        "bad = [m for m in ('torch', 'torchvision', 'worker', 'training', 'shared.imaging', 'simplejpeg') if m in sys.modules];"
        "print('LOADED', bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "LOADED []" in proc.stdout


def test_export_reviews_refusing_its_out_does_not_import_torch(tmp_path):
    """export-reviews runs where the web runs (no torch there); its error handling is the training commands'
    wrapper, which must import only export-reviews' own exceptions to catch them (the parser's light
    training.config is imported for every command)."""
    (tmp_path / "a-file").write_text("not a folder")
    code = (
        "import sys; from pixelproof.cli import main;"
        f"rc = main(['export-reviews', {str(tmp_path / 'a-file')!r}]);"
        "bad = [m for m in ('torch', 'torchvision', 'training.train', 'training.data', 'shared.modeling') if m in sys.modules];"
        "print('RC', rc, 'LOADED', bad)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PIXELPROOF_DATA_DIR": str(tmp_path / "data")})
    assert "RC 2 LOADED []" in proc.stdout, proc.stdout + proc.stderr
    assert "is a file; name a folder to write into" in proc.stderr
