"""The hostile-input probes of issues 19 and 34, run as a user would: each case is a fresh `sgtool` process.

Prints one JSON object and records it with results_io (benchmarks/results/hostile_probes.json): how
many cases ran, their exit codes, every case whose stderr holds "Traceback" (must be none), every case
that hung past its timeout (must be none), every refused case that changed the workspace, every case
whose outcome was not the expected one, and the line each printed. Takes several minutes on 2 CPU cores.
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

    try:
        return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout,
                              preexec_fn=file_size_limit if limit_bytes else None)
    except subprocess.TimeoutExpired as exc:  # a hang: recorded, not raised
        return subprocess.CompletedProcess(exc.cmd, None, "", "(no exit: killed after its timeout)")


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


# ---------------------------------------------------------------- issue 34

HANG_TIMEOUT = 180  # seconds a probe that could block (a FIFO, /dev/zero) may take before it counts as a hang


def kept(ws: Path, live: str | None) -> dict:
    """The workspace as a refused command must leave it: lock files (a killed writer's stale one is removed
    by the next locker) and the folder a live writer is writing meanwhile do not count."""
    return {k: v for k, v in tree(ws).items() if not k.endswith(".lock") and not (live and k.startswith(live))}


def checked(ws: Path, case, name: str, *args, expect: int = 2, words: tuple = (), live: str | None = None,
            **options) -> None:
    """One probe whose workspace must be byte for byte the same afterwards."""
    before = kept(ws, live)
    done = sgtool(*args, timeout=options.pop("timeout", HANG_TIMEOUT * 5), **options)
    case(name, done, expect=expect, words=words, unchanged=kept(ws, live) == before)


def wait_for(path: Path, seconds: float = 120.0, holder: int | None = None) -> bool:
    """Whether path appears within `seconds` (with `holder`: a lock file naming that pid as its writer)."""
    def there() -> bool:
        try:
            return path.exists() and (holder is None or path.read_text().split()[:1] == [str(holder)])
        except OSError:
            return False

    deadline = time.time() + seconds
    while not there() and time.time() < deadline:
        time.sleep(0.05)
    return there()


def writer_cases(base: Path, ws: Path, case) -> None:
    """1, 2: a second writer of a run, and of the dataset a run trains on, refused; resume on a changed dataset refused."""
    assert sgtool("-w", ws, "-q", "prepare", "synth", "--images", "24", "--workers", "1", "--name", "fp").returncode == 0
    live = subprocess.Popen([sys.executable, "-m", "sgtool", "-w", ws, "-q", "train", "--dataset", "fp", "--head", "tensor",
                             "--epochs", "3000", "--name", "live", "--set", "sel_epochs=0"], env=ENV, stderr=subprocess.PIPE)
    if wait_for(ws / "runs" / "live" / "checkpoints" / "last.pt"):
        checked(ws, case, "train --resume of a run being trained", "-w", ws, "train", "--resume", "live",
                words=("Another sgtool process", "the run 'live'"), live="runs/live")
        checked(ws, case, "prepare --force of a dataset a run trains on", "-w", ws, "prepare", "synth", "--images", "12",
                "--workers", "1", "--name", "fp", "--force", words=("training run 'live' on the dataset 'fp'",),
                live="runs/live")
    live.kill()
    live.wait()
    first = subprocess.Popen([sys.executable, "-m", "sgtool", "-w", ws, "-q", "train", "--resume", "live"], env=ENV,
                             stderr=subprocess.PIPE)
    if wait_for(ws / "runs" / ".live.lock", holder=first.pid):  # the killed run's stale lock file is there already
        case("two train --resume of one killed run", sgtool("-w", ws, "train", "--resume", "live"),
             words=("Another sgtool process",))
    first.kill()
    first.wait()
    assert sgtool("-w", ws, "-q", "prepare", "synth", "--images", "12", "--workers", "1", "--name", "fp",
                  "--force").returncode == 0
    checked(ws, case, "train --resume on a dataset prepared again", "-w", ws, "train", "--resume", "live",
            words=("was prepared again since run 'live' started",))


def input_cases(base: Path, ws: Path, case) -> None:
    """4, 5, 7, 12: files that block, never end, nest too deep, repeat keys or hold too many objects."""
    os.mkfifo(base / "config.fifo")
    texts = {"key 1": "1: 2\n", "key null": "null: 2\n", "nested 100,000 deep": "a: " + "[" * 100_000 + "\n",
             "a key twice": "epochs: 1\nepochs: 2\n"}
    configs = {"a FIFO": (base / "config.fifo", "not a regular file"), "/dev/zero": (Path("/dev/zero"), "not a regular file")}
    for name, text in texts.items():
        (base / f"{len(configs)}.yaml").write_text(text)
        configs[name] = (base / f"{len(configs)}.yaml", "nested" if "deep" in name else "twice" if "twice" in name else "The key")
    for name, (path, words) in configs.items():
        checked(ws, case, f"train --config with {name}", "-w", ws, "train", "--head", "tensor", "--config", path,
                words=(words,), timeout=HANG_TIMEOUT)
    deep = base / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    twice = base / "twice.json"
    twice.write_text('{"images": [], "images": []}')
    checked(ws, case, "draw of JSON nested 100,000 deep", "draw", deep, "--out", base / "deep.png", words=("too many levels",))
    for name, path, words in (("nested 100,000 deep", deep, "too many levels"), ("a key twice", twice, "twice")):
        checked(ws, case, f"prepare custom of JSON with {name}", "-w", ws, "prepare", "custom", "--source", path,
                "--name", "c", words=(words,))
    many = [{"box": [i % 90, i % 80, i % 90 + 5, i % 80 + 5], "label": "cup"} for i in range(100_000)]
    big = custom_json(base / "many.json", [{**record("train"), "objects": many}, record("test")])
    checked(ws, case, "prepare custom of an image with 100,000 objects", "-w", ws, "prepare", "custom", "--source", big,
            "--name", "c", words=("100,000 objects",))
    case("prepare on a disk that fills up", sgtool("-w", base / "full-ws", "prepare", "synth", "--images", "60",
                                                   "--workers", "1", limit_bytes=30_000))
    results_ok = not (base / "full-ws" / "data").exists()
    case("  ... leaves no empty data/ folder", subprocess.CompletedProcess([], 0 if results_ok else 1, "", ""), expect=0)
    (base / "file-ws").write_text("x")
    checked(ws, case, "-w a file", "-w", base / "file-ws", "train", words=("is a file, not a folder",))


def number_cases(base: Path, ws: Path, case) -> None:
    """6, 11, 12: every number setting finite and in range; --k / --metric as plain ASCII integers and names."""
    for setting in ("epochs=.inf", "epochs=1.0e+400", "rank=100000000000000000000", "lr=inf", "grad_clip=.nan",
                    "weight_decay=.inf", "minutes=.nan", "batch_size=99999999999999999999"):
        checked(ws, case, f"--set {setting}", "-w", ws, "train", "--head", "tensor", "--set", setting,
                words=("The setting " + setting.split("=")[0],))
    for option in (("--k", "5_0"), ("--k", "\u0665\u0660"), ("--metric", "r@50"), ("--metric", "R@5_0")):
        checked(ws, case, f"eval {option[0]} {option[1]!r}", "-w", ws, "eval", "--run", "f", *option, words=(option[1],))
    case("eval --k 50 --metric R@50", sgtool("-w", ws, "-q", "eval", "--run", "f", "--k", "50", "--metric", "R@50"),
         expect=0)


def predictions_cases(base: Path, ws: Path, case) -> None:
    """8, 13: a predictions h5 of odd types, or made before its dataset was prepared again."""
    path = ws / "runs" / "f" / "predictions" / "test.h5"
    good = path.read_bytes()

    def replaced(name: str, value) -> None:
        with h5py.File(path, "r+") as h5:
            del h5[name]
            h5[name] = value

    def meta(value: str) -> None:
        with h5py.File(path, "r+") as h5:
            fingerprint = json.loads(h5.attrs["meta"]) if value == "fingerprint" else None
            h5.attrs["meta"] = json.dumps({**fingerprint, "vocabulary_fingerprint": "0" * 16}) if fingerprint else value

    for name, change, words in (("meta not JSON", lambda: meta("{not json"), "not a JSON object"),
                                ("meta a JSON list", lambda: meta("[1, 2]"), "not a JSON object"),
                                ("pairs as bytes", lambda: replaced("pairs", np.bytes_(b"0123")), "stores pairs"),
                                ("boxes a scalar", lambda: replaced("boxes", 1.0), "stores boxes"),
                                ("another vocabulary", lambda: meta("fingerprint"), "an earlier preparation of 'synth'")):
        path.write_bytes(good)
        change()
        checked(ws, case, f"eval of predictions with {name}", "-w", ws, "eval", "--run", "f", words=(words,))
    path.write_bytes(good)


def predict_cases(base: Path, ws: Path, case) -> None:
    """3, 9, 13, 15: images sharing a name, a degenerate image, odd --out targets and managed folders."""
    from PIL import Image

    assert sgtool("-w", ws, "-q", "train-detector", "--dataset", "synth", "--epochs", "1", "--batch-size", "4",
                  "--name", "d1").returncode == 0
    for folder, colour in (("d1", "white"), ("d2", "red")):
        (base / folder).mkdir(exist_ok=True)
        Image.new("RGB", (64, 64), colour).save(base / folder / "same.png")
    Image.new("RGB", (5000, 1), "white").save(base / "thin.png")
    done = sgtool("-w", ws, "predict", "--run", "f", "--detector", "d1", "--out", base / "O", base / "d1" / "same.png",
                  base / "d2" / "same.png")
    case("predict of two images named same.png", done, expect=0)
    graphs = sorted(p.name for p in (base / "O").glob("*.graph.json"))
    results_ok = graphs == ["same-2.graph.json", "same.graph.json"]
    case("  ... two graphs written", subprocess.CompletedProcess([], 0 if results_ok else 1, "", str(graphs)), expect=0)
    checked(ws, case, "predict of a 5000 x 1 PNG", "-w", ws, "predict", "--run", "f", "--detector", "d1", "--out",
            base / "O", base / "thin.png", words=("5000 x 1 pixels",))
    os.mkfifo(base / "out.fifo")
    (base / "loop").symlink_to(base / "loop")
    for name, out, words in (("a FIFO", base / "out.fifo", "not a folder"), ("a symlink loop", base / "loop", "symbolic"),
                             ("/dev/full", Path("/dev/full"), "not a folder"),
                             ("the workspace's data/", ws / "data" / "x", "inside the workspace's data/"),
                             ("the workspace's runs/", ws / "runs" / "f", "inside the workspace's runs/")):
        checked(ws, case, f"predict --out {name}", "-w", ws, "predict", "--run", "f", "--out", out,
                base / "d1" / "same.png", words=(words,), timeout=HANG_TIMEOUT)


def draw_cases(base: Path, ws: Path, case) -> None:
    """10, 14: absurd boxes draw; a missing image is said in one line; -q keeps matplotlib quiet."""
    graph = {"width": 64, "height": 64, "relations": [{"subject": 0, "predicate": "on", "object": 1, "score": 0.5}],
             "objects": [{"id": 0, "label": "a", "box": [0, 0, 1e308, 1e308]},
                         {"id": 1, "label": "\u4e2d\u6587", "box": [-1e308, 3, 10, 10]}]}
    for name, image, words in (("absurd boxes on an image", str(base / "d1" / "same.png"), ()),
                               ("a missing image", "missing.png", ("drawn without it",))):
        (base / "absurd.json").write_text(json.dumps({**graph, "image": image}))
        case(f"draw of {name}", sgtool("draw", base / "absurd.json", "--out", base / "absurd.png"), expect=0, words=words)
    done = sgtool("-q", "draw", base / "absurd.json", "--out", base / "quiet.png")
    case("draw -q of labels without glyphs prints nothing", done, expect=0)
    results_ok = done.stderr == ""
    case("  ... stderr empty", subprocess.CompletedProcess([], 0 if results_ok else 1, "", done.stderr[:200]), expect=0)


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

    def case(name: str, done: subprocess.CompletedProcess, expect: int = 2, words: tuple = (),
             unchanged: bool | None = None) -> None:
        text = " ".join(done.stderr.split())
        results.append({"case": name, "code": done.returncode, "traceback": "Traceback" in done.stderr,
                        "hang": done.returncode is None, "workspace_unchanged": unchanged,
                        "ok": done.returncode == expect and all(w in text for w in words) and unchanged is not False,
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

    # 10 issue 34: one writer per run, input that hangs or overflows, the remaining tracebacks
    for probes in (writer_cases, input_cases, number_cases, predictions_cases, predict_cases, draw_cases):
        probes(base, ws, case)

    summary = {"cases": len(results), "seconds": round(time.time() - started, 1),
               "tracebacks": [r["case"] for r in results if r["traceback"]],
               "hangs": [r["case"] for r in results if r.get("hang")],
               "workspace_changed": [r["case"] for r in results if r.get("workspace_unchanged") is False],
               "unexpected": [r for r in results if not r["ok"]],
               "exit_codes": {str(c): sum(r["code"] == c for r in results) for c in sorted({r["code"] for r in results}, key=str)},
               "results": results}
    print(json.dumps(summary, indent=1))
    from results_io import write_result

    write_result("hostile_probes", budgets={"cases": len(results), "timeout_s_per_hang_probe": HANG_TIMEOUT},
                 seeds=[0], numbers={k: v for k, v in summary.items() if k != "results"} | {"results": results},
                 sources=["sgtool"], notes="Each case a fresh sgtool process; ok = expected exit code and words, "
                 "no traceback, no hang, and (where checked) a workspace byte for byte unchanged (lock files, and "
                 "the run folder a live writer writes meanwhile, left out of that comparison).")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
