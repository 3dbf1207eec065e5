"""The fleet bench's bookkeeping: shards as a CI matrix lists them, compiles keyed by input
whatever the clone's path, and the table it prints."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench import fleet, synth
from bench.compiles import CompileLog


def test_shards_split_48_targets_over_6_runners_in_order() -> None:
    names = [name for name, _ in synth.target_names(48)]
    shards = fleet._shards(names, 6)
    assert [len(s) for s in shards] == [8] * 6
    assert [n for s in shards for n in s] == names
    assert fleet._shards(names[:7], 3) == [names[0:3], names[3:6], names[6:7]]


def test_the_same_compile_in_two_clones_is_one_input(tmp_path: Path) -> None:
    keys = []
    for runner in ("a", "b"):
        root = tmp_path / runner / "firmware"
        cc = CompileLog(tmp_path / runner / "cc", cc="sh")
        src = root / "app" / "main" / "gen" / "g00001.c"
        obj = root / "build" / "esp32c3-a" / "obj" / "g00001.o"
        cc.wrapper.write_text(cc.wrapper.read_text().replace('exec "', '# exec "'))
        subprocess.run([str(cc.wrapper), "-O2", "-c", str(src), "-o", str(obj)], check=True)
        keys.append(fleet._compiles(cc, root))
    assert keys[0] == keys[1]
    assert keys[0] == (("-O2", "-c", "<root>/app/main/gen/g00001.c", "-o",
                        "<root>/build/esp32c3-a/obj/g00001.o"),)


def _phase(compiles: int, hits: int) -> dict[str, object]:
    return {"wall": 95.4, "shards_wall": 93.7, "publish_index": 1.7,
            "runners": [{"targets": 8, "seconds": 92.4 + i, "cpu": 29.4 + i,
                         "compiles": compiles // 6} for i in range(6)],
            "compiles": compiles, "distinct": compiles, "cache_sent": 8 * 2**20,
            "cache_received": 300 * 2**10, "cache_requests": 930, "cache_hits": hits,
            "index": "sha256:" + "e" * 64}


def test_the_table_names_every_measure() -> None:
    result = {"files": 100, "targets": 48, "runners": 6, "cpus": 2,
              "single": {"seconds": 89.5, "cpu": 168.5, "compiles": 5040},
              "first": _phase(5040, 0), "second": _phase(0, 48),
              "cache_entries": 48, "cache_entry_bytes": 239 * 2**10, "cache_files": 528,
              "cache_file_bytes": 7 * 2**20, "cache_blobs": 252, "cache_blob_bytes": 6 * 2**20,
              "index": "sha256:" + "e" * 64}
    text = fleet.table(result)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 10  # header, separator and eight measures
    assert "| compiles (distinct inputs) | 5040 (5040) | 5040 (5040) | 0 |" in rows
    assert "| one runner's CPU, s | 168.5 | 29.4 to 34.4 | 29.4 to 34.4 |" in rows
    assert "| bytes to the cache | 0 | 8.0 MiB | 8.0 MiB |" in rows
    assert "48 entries (239 KiB) naming 528 files (7.0 MiB), stored as 252 blobs" in text
