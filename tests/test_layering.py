"""Imports run one way (web -> shared <- worker, training -> shared); the web process never loads torch, nor the
image decoders (it serves thumbnails the workers made)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT

FORBIDDEN = {
    "web": {"worker", "training", "torch", "torchvision"},
    "shared": {"web", "worker", "training"},
    "training": {"web", "worker"},
    "worker": {"web", "training"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package):
    bad = {}
    for path in (REPO_ROOT / package).rglob("*.py"):
        hits = imported_roots(path) & FORBIDDEN[package]
        if hits:
            bad[str(path.relative_to(REPO_ROOT))] = sorted(hits)
    assert not bad, f"{package}/ imports what it must not: {bad}"


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
