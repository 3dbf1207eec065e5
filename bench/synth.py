"""A synthetic large app: the bundled example plus N generated C files and T targets.

The repository is a real git repo with the same layout a user's firmware repo has:
``dodo.py`` star-importing esp32tasks, ``targets.toml``, and the app in ``app/``. Target
names repeat chips (``esp32c6-a``, ``esp32c6-b``); each target has one file of its own
(``main/target/<name>.c``, listed in its ``files``), so a change there rebuilds that target
alone, while a change in ``main/gen/`` rebuilds every target.
"""

from __future__ import annotations

import hashlib
import shutil
import string
from dataclasses import dataclass
from pathlib import Path

from bench.proc import run

__all__ = ["CHIPS", "Synth", "create", "target_names"]

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "examples" / "hello"
BUILD_SCRIPT = Path(__file__).resolve().parent / "synthbuild.py"
#: Chips with a linker script in the example, cycled over the targets.
CHIPS = ("esp32c3", "esp32c6", "esp32h2")
APP_DIR = "app"
#: Untracked files of ours that must not make the tree dirty.
IGNORED = ("/build/", "/.floor*", "/dodo_floor.py", "__pycache__/")


@dataclass(frozen=True, kw_only=True, slots=True)
class Synth:
    root: Path
    files: int
    targets: tuple[tuple[str, str], ...]
    """(name, chip) pairs."""

    @property
    def app(self) -> Path:
        return self.root / APP_DIR

    def gen_file(self, index: int) -> Path:
        return self.app / "main" / "gen" / f"g{index:05d}.c"

    def own_file(self, target: str) -> Path:
        return self.app / "main" / "target" / f"{target}.c"


def target_names(count: int) -> tuple[tuple[str, str], ...]:
    """``esp32c3-a, esp32c6-a, esp32h2-a, esp32c3-b, ...``: names repeat chips."""
    out = []
    for i in range(count):
        chip = CHIPS[i % len(CHIPS)]
        out.append((f"{chip}-{string.ascii_lowercase[i // len(CHIPS)]}", chip))
    return tuple(out)


def gen_source(index: int, salt: int = 0) -> str:
    return (
        "#include <stdint.h>\n\n"
        f"uint32_t synth_{index:05d}(uint32_t x)\n{{\n"
        f"    uint32_t a = x * 2654435761u + {index * 7 + salt}u;\n"
        "    for (int i = 0; i < 3; i++) {\n"
        "        a ^= (a << 7) ^ (a >> 3);\n"
        "    }\n"
        "    return a;\n}\n"
    )


def own_source(target: str, salt: int = 0, blob: Path | None = None) -> str:
    """The target's own file; with ``blob``, its bytes go into the app's rodata (.incbin)."""
    if blob is None:
        return (
            "#include <stdint.h>\n\n"
            f"/* this target's own code: {target} */\n"
            "uint32_t synth_target(uint32_t x)\n{\n"
            f"    return x * 40503u + {len(target) + salt}u;\n}}\n"
        )
    return (
        "#include <stdint.h>\n\n"
        f"/* this target's own code and data: {target} */\n"
        '__asm__(".section .rodata.synth_blob,\\"a\\"\\n.global synth_blob\\n"\n'
        f'        "synth_blob:\\n.incbin \\"{blob}\\"\\n.previous");\n'
        "extern const uint8_t synth_blob[];\n"
        "uint32_t synth_target(uint32_t x)\n{\n"
        f"    return x * 40503u + synth_blob[x & 1023u] + {len(target) + salt}u;\n}}\n"
    )


def write_blob(path: Path, size: int, seed: str) -> None:
    """``size`` incompressible bytes, the same for the same seed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(seed.encode()).digest()
    with path.open("wb") as out:
        for i in range(0, size, 1 << 16):
            out.write(hashlib.shake_256(block + i.to_bytes(8, "little")).digest(
                min(1 << 16, size - i)))


def table_source(files: int) -> str:
    decls = "".join(f"uint32_t synth_{i:05d}(uint32_t x);\n" for i in range(files))
    refs = "".join(f"    synth_{i:05d},\n" for i in range(files))
    return (
        "#include <stdint.h>\n\n"
        "typedef uint32_t (*synth_fn)(uint32_t);\n"
        "uint32_t synth_target(uint32_t x);\n"
        f"{decls}\n"
        "/* referenced from the link (-u synth_keep), so nothing is garbage-collected */\n"
        "__attribute__((used)) const synth_fn synth_keep[] = {\n"
        f"    synth_target,\n{refs}}};\n"
    )


def targets_toml(targets: tuple[tuple[str, str], ...]) -> str:
    lines = [
        "[project]",
        'name = "synth"',
        'app_type = "synth"',
        'version = "1.0.0"',
        f'app_dir = "{APP_DIR}"',
        "",
        "[builder]",
        'kind = "command"',
        'command = ["python3", "tools/build.py", "--target", "{target}", "--chip", "{chip}",',
        '           "--build-dir", "{build_dir}", "--version", "{version}"]',
        'toolchain = ["riscv64-unknown-elf-gcc", "riscv64-unknown-elf-ld"]',
    ]
    for name, chip in targets:
        lines += ["", "[[targets]]", f'name = "{name}"', f'chip = "{chip}"',
                  f'files = ["main/target/{name}.c"]']
    return "\n".join(lines) + "\n"


def create(root: Path, files: int, targets: int, *, extra_toml: str = "",
           blob_bytes: int = 0) -> Synth:
    """Write the repository at ``root`` (which must not exist) and commit it."""
    pairs = target_names(targets)
    synth = Synth(root=root, files=files, targets=pairs)
    shutil.copytree(EXAMPLE, synth.app, ignore=shutil.ignore_patterns("build", "__pycache__"))
    tools = synth.app / "tools"
    (tools / "build.py").rename(tools / "hello_build.py")
    shutil.copyfile(BUILD_SCRIPT, tools / "build.py")
    (synth.app / "main" / "gen").mkdir()
    (synth.app / "main" / "target").mkdir()
    for i in range(files):
        synth.gen_file(i).write_text(gen_source(i))
    if blob_bytes:  # room for it: 16MB flash, two app slots just under 8 MiB
        (synth.app / "synth_flash_size").write_text("16MB\n")
        (synth.app / "partitions.csv").write_text(
            "# Name, Type, SubType, Offset, Size, Flags\n"
            "nvs,      data, nvs,     0x9000,   0x4000,\n"
            "otadata,  data, ota,     0xd000,   0x2000,\n"
            "phy_init, data, phy,     0xf000,   0x1000,\n"
            "ota_0,    app,  ota_0,   0x10000,  0x7F0000,\n"
            "ota_1,    app,  ota_1,   0x800000, 0x7F0000,\n")
    for name, _ in pairs:
        blob = None
        if blob_bytes:
            blob = synth.app / "blobs" / f"{name}.bin"
            write_blob(blob, blob_bytes, name)
        synth.own_file(name).write_text(own_source(name, blob=blob))
    (synth.app / "main" / "synth_table.c").write_text(table_source(files))
    (root / "targets.toml").write_text(targets_toml(pairs) + extra_toml)
    (root / "dodo.py").write_text('"""Synthetic app."""\n\n'
                                  "from esp32tasks.tasks import *  # noqa: F403\n")
    (root / ".gitignore").write_text("\n".join(IGNORED) + "\n")
    git = ["git", "-C", str(root)]
    run(["git", "init", "-q", "-b", "main", str(root)])
    run([*git, "add", "-A"])
    commit(root, "synthetic app")
    return synth


def commit(root: Path, message: str) -> None:
    run(["git", "-C", str(root), "-c", "user.name=bench", "-c", "user.email=bench@localhost",
         "commit", "-q", "-a", "-m", message])
