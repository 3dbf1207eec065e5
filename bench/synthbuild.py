"""The synthetic app's build script, copied into it as ``tools/build.py``.

It drives the example's own build (``tools/hello_build.py``, a copy of
``examples/hello/tools/build.py``) and changes one thing: every ``main/**/*.c`` is
compiled, and only when its object is missing or older than its source or headers, or its
flags changed (like make or ninja). So a one-file change costs one real compile per target
that uses the file, plus the link and the image. Each compile goes through ``$CC``,
which the benchmark points at a wrapper that counts them.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
hb: Any = importlib.import_module("hello_build")

BIG_FLASH_MARK = "synth_flash_size"
"""A file in the app dir naming a larger flash size (e.g. ``16MB``) for big firmware."""

KEEP_SYMBOL = "synth_keep"
"""The generated table that references every generated function (kept under gc-sections)."""


def _deps(depfile: Path) -> list[str]:
    text = depfile.read_text().replace("\\\n", " ")
    _, _, rest = text.partition(":")
    return rest.split()


def _stale(source: Path, obj: Path, stamp: Path, flags: str) -> bool:
    if not obj.exists() or not stamp.exists() or stamp.read_text() != flags:
        return True
    built = obj.stat().st_mtime_ns
    depfile = obj.with_suffix(".d")
    deps = _deps(depfile) if depfile.exists() else [str(source)]
    return any(Path(d).stat().st_mtime_ns > built for d in deps)


def build_elf(*, cc: list[str], sources: Sequence[str], obj_dir: Path, out_dir: Path,
              name: str, linker_script: str, defines: Sequence[str]) -> None:
    """``hello_build.build_elf``, compiling only what changed and in parallel."""
    app_dir: Path = hb.APP_DIR
    common = [*hb.CFLAGS, f"-ffile-prefix-map={app_dir}=.", "-I", str(app_dir / "include"),
              *defines]
    flags = hashlib.sha256("\0".join([*cc, *common]).encode()).hexdigest()
    todo: list[list[str]] = []
    stamps: list[Path] = []
    objects = []
    for source in sources:
        obj = obj_dir / (source + ".o")
        stamp = obj_dir / (source + ".flags")
        if _stale(app_dir / source, obj, stamp, flags):
            obj.parent.mkdir(parents=True, exist_ok=True)
            obj.unlink(missing_ok=True)
            todo.append([*cc, *common, "-MMD", "-MF", str(obj.with_suffix(".d")), "-c",
                         str(app_dir / source), "-o", str(obj)])
            stamps.append(stamp)
        objects.append(os.path.relpath(obj, out_dir))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(lambda argv: hb.run(argv, cwd=app_dir), todo))
    for stamp in stamps:
        stamp.write_text(flags)
    keep = [f"-Wl,-u,{KEEP_SYMBOL}"] if name == hb.PROJECT_NAME else []
    hb.run([*cc, *hb.LDFLAGS, *keep, f"-Wl,-Map={name}.map", "-L", str(app_dir / "ld"),
            "-T", linker_script, "-o", f"{name}.elf", *objects], cwd=out_dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    target = args[args.index("--target") + 1] if "--target" in args else ""
    app_dir: Path = hb.APP_DIR
    shared = sorted(p.relative_to(app_dir).as_posix() for p in (app_dir / "main").glob("*.c"))
    generated = sorted(p.relative_to(app_dir).as_posix()
                       for p in (app_dir / "main" / "gen").glob("*.c"))
    own = app_dir / "main" / "target" / f"{target}.c"
    mine = [own.relative_to(app_dir).as_posix()] if own.is_file() else []
    hb.APP_SOURCES = (*shared, *generated, *mine)
    hb.build_elf = build_elf
    big = app_dir / BIG_FLASH_MARK
    if big.is_file():  # the large-firmware variant: a 16MB flash with 8 MiB app slots
        hb.FLASH_SIZE = big.read_text().strip()
        hb.FLASH_SIZE_BYTES = int(hb.FLASH_SIZE.removesuffix("MB")) * 1024 * 1024
    code: int = hb.main(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
