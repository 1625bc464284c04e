"""The hostile-input probes of issue 19, run as a user would: each case is a fresh `sgtool` process.

Prints one JSON object: how many cases ran, their exit codes, every case whose stderr holds
"Traceback" (must be none), every case whose outcome was not the expected one, and the first
line each printed. Takes a few minutes on 2 CPU cores.
    python benchmarks/hostile_probes.py [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
BROKEN_TORCHVISION = (
    "import importlib.abc, sys\n"
    "class B(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name.split('.')[0] == 'torchvision': raise RuntimeError('operator torchvision::nms does not exist')\n"
    "sys.meta_path.insert(0, B())\n"
    "from sgtool.cli import main\n"
    "main(sys.argv[1:])\n")


def sgtool(*args, limit_bytes: int | None = None, broken_torchvision: bool = False, timeout: int = 600):
    command = [sys.executable, "-c", BROKEN_TORCHVISION] if broken_torchvision else [sys.executable, "-m", "sgtool"]

    def file_size_limit() -> None:  # writes beyond it fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout,
                          preexec_fn=file_size_limit if limit_bytes else None)


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def huge_png(path: Path, side: int = 20000) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def custom_json(path: Path, records) -> Path:
    path.write_text(json.dumps(records))
    return path


def record(split: str, **extra) -> dict:
    return {"file": None, "width": 100, "height": 100, "split": split,
            "objects": [{"box": [0, 0, 20, 20], "label": "cup"}, {"box": [10, 10, 50, 40], "label": "table"}],
            "relations": [{"subject": 0, "predicate": "on", "object": 1}], **extra}


def coco(images: list, categories: list) -> dict:
    return {"images": images, "categories": categories, "rel_categories": [{"id": 1, "name": "on"}],
            "annotations": [{"id": 1, "image_id": 1, "bbox": [0, 0, 5, 5], "category_id": categories[0]["id"]},
                            {"id": 2, "image_id": 1, "bbox": [2, 2, 5, 5], "category_id": categories[-1]["id"]}],
            "relations": [{"subject_id": 1, "object_id": 2, "predicate_id": 1}]}


def vg_source(ws: Path, folder: Path, change) -> Path:
    """The prepared synth dataset in the community file layout, then damaged by `change`."""
    data = ws / "data" / "synth"
    folder.mkdir(parents=True)
    shutil.copy(data / "sgg.h5", folder / "VG-SGG.h5")
    shutil.copy(data / "dicts.json", folder / "VG-SGG-dicts.json")
    shutil.copy(data / "image_data.json", folder / "image_data.json")
    with h5py.File(folder / "VG-SGG.h5", "r+") as h5:
        change(h5)
    return folder


def nan_boxes(h5) -> None:
    boxes = h5["boxes_1024"][()].astype(np.float32)
    boxes[[0, 3], 1] = [np.nan, np.inf]
    del h5["boxes_1024"]
    h5["boxes_1024"] = boxes


def split_seven(h5) -> None:
    h5["split"][0] = 7


def huge_graph(path: Path, objects: int, relations: int, image: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 900, size=(objects, 2)).round(1).tolist()
    pairs, scores = rng.integers(0, objects, size=(relations, 2)).tolist(), rng.random(relations).round(6).tolist()
    path.write_text(json.dumps({"image": image, "width": 1000, "height": 1000,
                                "objects": [{"id": i, "label": "x", "box": [x, y, x + 9, y + 9]} for i, (x, y) in enumerate(xy)],
                                "relations": [{"subject": s, "predicate": "near", "object": o, "score": p}
                                              for (s, o), p in zip(pairs, scores)]}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", type=Path, help="Folder to run in (kept); default: a temporary one.")
    args = parser.parse_args()
    base = Path(args.keep or tempfile.mkdtemp(prefix="sgtool-probes-"))
    base.mkdir(parents=True, exist_ok=True)
    ws, outside = base / "ws", base / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "keep.txt").write_text("mine")
    results: list[dict] = []

    def case(name: str, done: subprocess.CompletedProcess, expect: int = 2, words: tuple = ()) -> None:
        text = " ".join(done.stderr.split())
        results.append({"case": name, "code": done.returncode, "traceback": "Traceback" in done.stderr,
                        "ok": done.returncode == expect and all(w in text for w in words),
                        "said": (done.stderr.strip().splitlines() or [""])[-2 if "Hint:" in done.stderr else -1][:200]})

    started = time.time()
    assert sgtool("-w", ws, "-q", "prepare", "synth", "--images", "16", "--workers", "1").returncode == 0
    assert sgtool("-w", ws, "-q", "train", "--head", "freq", "--name", "f").returncode == 0
    assert sgtool("-w", ws, "-q", "train", "--head", "tensor", "--epochs", "1", "--name", "t", "--set",
                  "sel_epochs=0").returncode == 0
    source = custom_json(base / "good.json", [record("train"), record("test")])

    # 1 names that would reach outside the workspace
    before = tree(outside), tree(ws)
    for bad in (str(outside), "../runs", "", "..", "a/b"):
        case(f"prepare synth --name {bad!r}", sgtool("-w", ws, "prepare", "synth", "--images", "4", "--name", bad), words=("not a usable",))
        case(f"prepare custom --name {bad!r}", sgtool("-w", ws, "prepare", "custom", "--source", source, "--name", bad), words=("not a usable",))
        case(f"train --name {bad!r}", sgtool("-w", ws, "train", "--head", "freq", "--name", bad), words=("not a usable",))
        case(f"eval --run {bad!r}", sgtool("-w", ws, "eval", "--run", bad), words=("not a usable",))
    case("prepare vrd --name outside", sgtool("-w", ws, "prepare", "vrd", "--source", base, "--name", str(outside)), words=("not a usable",))
    case("prepare vg --split ../x", sgtool("-w", ws, "prepare", "vg", "--source", base, "--split", "../x"), words=("not a usable",))
    results.append({"case": "names left outside and workspace unchanged", "code": None, "traceback": False,
                    "ok": (tree(outside), tree(ws)) == before, "said": ""})

    # 2 two writers of one dataset
    first = subprocess.Popen([sys.executable, "-m", "sgtool", "-w", ws, "-q", "prepare", "synth", "--images", "20000",
                              "--workers", "2", "--name", "busy"], env=ENV, stderr=subprocess.PIPE)
    for _ in range(600):
        if (ws / "data" / ".busy.lock").exists():
            break
        time.sleep(0.05)
    case("a second prepare of one name", sgtool("-w", ws, "prepare", "synth", "--images", "4", "--name", "busy"),
         words=("Another sgtool process",))
    # 3 its render workers end with it
    workers = [int(p) for t in Path(f"/proc/{first.pid}/task").glob("*/children") for p in t.read_text().split()]
    first.send_signal(signal.SIGKILL)
    first.wait()
    time.sleep(3)
    alive = [p for p in workers if Path(f"/proc/{p}/stat").exists()
             and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    results.append({"case": "render workers gone 3 s after SIGKILL of prepare", "code": None, "traceback": bool(first.stderr.read()),
                    "ok": bool(workers) and not alive, "said": f"{len(workers)} workers, {len(alive)} alive"})

    # 4 writes that fail during train (a file size limit: EFBIG, as a full disk fails)
    done = sgtool("-w", ws, "train", "--head", "tensor", "--epochs", "1", "--name", "full", "--set", "sel_epochs=0",
                  limit_bytes=60_000)
    status = json.loads((ws / "runs" / "full" / "run.json").read_text()).get("status") if (ws / "runs" / "full" / "run.json").exists() else "removed"
    case("train whose checkpoint write fails", done, words=("checkpoints",))
    results.append({"case": "that run is not left running", "code": None, "traceback": False,
                    "ok": status in ("failed", "removed"), "said": f"status {status}"})

    # 5 silent wrong results
    case("eval --k 2**63", sgtool("-w", ws, "eval", "--run", "f", "--k", "9223372036854775808"), words=("beyond the largest K",))
    case("vg h5 with NaN / inf boxes", sgtool("-w", ws, "prepare", "vg", "--source", vg_source(ws, base / "vg-nan", nan_boxes)),
         words=("NaN or infinite", "row(s) 0, 3"))
    case("vg h5 with split 7", sgtool("-w", ws, "prepare", "vg", "--source", vg_source(ws, base / "vg-split", split_seven)),
         words=("split holds 7",))
    image = {"id": 1, "width": 10, "height": 10}
    customs = {
        "custom: two images share an id": (coco([image, image], [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]), "share the id"),
        "custom: duplicate category id": (coco([image], [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]), "twice"),
        "custom: category name null": (coco([image], [{"id": 1, "name": None}, {"id": 2, "name": "b"}]), "non-empty string"),
        "custom: category name 12": (coco([image], [{"id": 1, "name": 12}, {"id": 2, "name": "b"}]), "non-empty string"),
        "custom: three records, one image_id": ([record("train", image_id=4), record("train", image_id=4),
                                                 record("test", image_id=4)], "share the image_id 4"),
        "custom: width 1e30": ([record("train", width=1e30), record("test")], "width must be"),
        "custom: image_id 2**70": ([record("train", image_id=2**70), record("test", image_id=1)], "image_id must be"),
    }
    for k, (name, (payload, words)) in enumerate(customs.items()):
        case(name, sgtool("-w", ws, "prepare", "custom", "--source", custom_json(base / f"c{k}.json", payload), "--name", "c"),
             words=(words,))

    # 6 what used to be tracebacks
    case("--seed -1 prepare synth", sgtool("-w", ws, "--seed", "-1", "prepare", "synth", "--images", "4"), words=("--seed must be",))
    (base / "binary.yaml").write_bytes(os.urandom(256))
    case("train --config binary", sgtool("-w", ws, "train", "--head", "tensor", "--config", base / "binary.yaml"), words=("not a text file",))
    case("train --head tensor --rank 1e9", sgtool("-w", ws, "train", "--head", "tensor", "--rank", "1000000000"), words=("parameters",))
    last = ws / "runs" / "t" / "checkpoints" / "last.pt"
    good, run_json = last.read_bytes(), (ws / "runs" / "t" / "run.json").read_text()
    (ws / "runs" / "t" / "run.json").write_text(run_json.replace('"complete"', '"running"'))
    for damage, data in (("truncated", good[: len(good) // 2]), ("random", os.urandom(len(good))), ("0-byte", b"")):
        last.write_bytes(data)
        marked = (ws / "runs" / "t" / "run.json").read_text()
        case(f"train --resume with a {damage} last.pt", sgtool("-w", ws, "train", "--resume", "t"), words=("not a readable checkpoint",))
        results.append({"case": f"  ... run.json untouched ({damage})", "code": None, "traceback": False,
                        "ok": (ws / "runs" / "t" / "run.json").read_text() == marked, "said": ""})
    last.write_bytes(good)
    (ws / "runs" / "t" / "run.json").write_text(run_json)
    bomb = huge_png(base / "huge.png")
    case("predict a 20000 x 20000 PNG", sgtool("-w", ws, "predict", bomb), words=("too large to open",))
    case("draw a graph whose image is one", sgtool("draw", huge_graph(base / "bomb.json", 2, 1, str(bomb)), "--out", base / "b.png"),
         words=("too large to open",))

    # 7 a huge graph
    start = time.time()
    done = sgtool("--json", "draw", huge_graph(base / "huge.json", 2000, 620_000), "--out", base / "huge.png")
    case("draw of a 2,000 x 620,000 graph.json", done, expect=0)
    results[-1]["said"] = f"{time.time() - start:.1f} s; " + done.stdout.strip()[:160]

    # 8 messages
    case("prepare custom --source DIR", sgtool("-w", ws, "prepare", "custom", "--source", base), words=("is a directory",))
    case("predict DIR", sgtool("-w", ws, "predict", base), words=("is a directory",))
    (base / "broken.yaml").write_text("a: 1\nb: [1, 2\nc: 3\n")
    done = sgtool("-w", ws, "train", "--head", "tensor", "--config", base / "broken.yaml")
    case("train --config with a YAML syntax error", done, words=("line 3, column 2",))
    results[-1]["ok"] &= len(done.stderr.strip().splitlines()) == 2
    manifest = ws / "data" / "synth" / "manifest.json"
    kept = manifest.read_text()
    manifest.write_text("{corrupt")
    done = sgtool("-w", ws, "--json", "info", "--verify")
    case("info --verify with a corrupt manifest.json", done, expect=0)
    results[-1]["ok"] &= "manifest.json is corrupt" in done.stdout
    case("prepare over a corrupt manifest.json", sgtool("-w", ws, "prepare", "synth", "--images", "16", "--workers", "1"),
         words=("corrupt manifest.json", "--force"))
    manifest.write_text(kept)
    state = ws / "workspace.json"
    kept = state.read_text()
    state.write_text("\0 not json")
    case("eval with a corrupt workspace.json", sgtool("-w", ws, "eval"), words=("workspace.json", "corrupt"))
    state.write_text(kept)
    no_val = custom_json(base / "noval.json", [record("train"), record("train"), record("test")])
    assert sgtool("-w", ws, "-q", "prepare", "custom", "--source", no_val, "--name", "noval").returncode == 0
    case("train on an empty val split warns", sgtool("-w", ws, "train", "--dataset", "noval", "--head", "tensor", "--epochs",
                                                     "1", "--set", "sel_epochs=0"), expect=0, words=("Warning:",))

    # 9 a broken torch / torchvision pair
    graph = huge_graph(base / "small.json", 3, 2)
    for name, argv, expect in (("freq", ("train", "--head", "freq", "--name", "f2"), 0), ("eval", ("eval", "--run", "f2"), 0),
                               ("draw", ("draw", graph, "--out", base / "s.png"), 0),
                               ("tensor", ("train", "--head", "tensor", "--epochs", "1"), 2)):
        case(f"broken torchvision: {name}", sgtool("-w", ws, "-q", *argv, broken_torchvision=True), expect=expect,
             words=("cannot be loaded with torch",) if expect else ())

    print(json.dumps({"cases": len(results), "seconds": round(time.time() - started, 1),
                      "tracebacks": [r["case"] for r in results if r["traceback"]],
                      "unexpected": [r for r in results if not r["ok"]],
                      "exit_codes": {str(c): sum(r["code"] == c for r in results) for c in sorted({r["code"] for r in results}, key=str)},
                      "results": results}, indent=1))
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
