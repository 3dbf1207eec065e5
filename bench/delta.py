"""What a device downloads for one update: the full firmware layer against a delta OTA patch
(ESP-IDF esp_delta_ota's format, :mod:`esp32tasks.delta`), and what making the patch costs.

Cases: the bundled example with a one-line string change (its greeting) and with a changed
function (``hello_main``), and the synthetic app with one changed file of N.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import synth
from bench.proc import BenchError
from bench.scenarios import Prepared
from esp32tasks import delta, oci

__all__ = ["measure"]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hello"


def _case(name: str, base: bytes, new: bytes) -> dict[str, Any]:
    layer = oci.firmware_image(target="esp32c3", app_name="app.bin", firmware=new).layer
    start = time.perf_counter()
    patch = delta.make(base, new, base_label=f"{name} (base)", new_label=f"{name} (new)")
    seconds = time.perf_counter() - start
    return {"case": name, "app": len(new), "layer": len(layer.data),
            "patch": len(patch.data), "share_of_layer": len(patch.data) / len(layer.data),
            "make_seconds": seconds}


def _build_example(app: Path, out: Path) -> bytes:
    run = subprocess.run([sys.executable, "tools/build.py", "--target", "esp32c3", "--chip",
                          "esp32c3", "--build-dir", str(out), "--version", "1.0.0"],
                         cwd=app, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise BenchError(f"the example did not build: {run.stderr.strip()[-300:]}")
    return (out / "hello.bin").read_bytes()


def _example(workdir: Path) -> list[dict[str, Any]]:
    app = workdir / "hello"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("build", "__pycache__"))
    base = _build_example(app, workdir / "a")
    defaults = app / "sdkconfig.defaults"
    defaults.write_text(defaults.read_text().replace('GREETING="Hello"', 'GREETING="Hallo"'))
    string = _build_example(app, workdir / "b")
    main = app / "main" / "hello_main.c"
    main.write_text(main.read_text().replace('"app version "', '"patched app, version "'))
    function = _build_example(app, workdir / "c")
    return [_case("example, one string", base, string),
            _case("example, one function", base, function)]


def _app(p: Prepared) -> bytes:
    name, _ = p.synth.targets[0]
    receipt = json.loads((p.synth.root / "build" / "receipts" / f"app-{name}.json").read_text())
    return (p.synth.root / receipt["app"]["path"]).read_bytes()


def _synthetic(workdir: Path, files: int) -> dict[str, Any]:
    p = Prepared(workdir / "synth", files, 1)
    p.runner.release()
    base = _app(p)
    p.synth.gen_file(0).write_text(synth.gen_source(0, salt=1))
    synth.commit(p.synth.root, "change one file")
    p.runner.release()
    return _case(f"synthetic, one file of {files}", base, _app(p))


def measure(workdir: Path, files: int) -> list[dict[str, Any]]:
    """Every case's sizes (bytes) and the time ``delta.make`` took."""
    return [*_example(workdir / "example"), _synthetic(workdir, files)]
