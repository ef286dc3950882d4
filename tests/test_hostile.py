"""Hostile input (issue 25): no crash, no bomb, no traceback, nothing lost.

The fuzz harness reaches the payload decoders: structured mutations of real percept files (header
fields, the payload's own declared size, the learned codec's latent grid, batch and string groups,
payloads swapped between codecs, bit flips and truncations inside the payload) are packed with a
valid CRC, and each is decoded by `percept decode` in a child process under a memory and CPU limit
(`resource.setrlimit`). Every case must end as exit 2 with one line, or exit 0 with a PNG of the
header's size; anything else (a signal, a traceback, a hang, "out of memory", a peak RSS above
`MAX_RSS_MB`) is a failure.

The children are forked by a server process (this file run as a script) that imported percept and
built the codecs once, so a case costs milliseconds (Pillow) or a fraction of a second (learned).
`test_fuzz_bounded` runs a few hundred cases in CI; `test_fuzz_thousands` (slow) runs
`PERCEPT_FUZZ_CASES` (default 3000). Every crash found is kept under tests/data/hostile/ and
replayed by `test_regression_corpus`.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from percept.codecs.varint import encode_varint as _varint

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "data" / "hostile"
MAX_RSS_MB = 1536
CASE_TIMEOUT_S = 60
CODECS = ("jpeg", "webp", "avif", "jpeg2000", "percept-hyperprior")
LEARNED = "percept-hyperprior"


# ---------------------------------------------------------------------------------------------
# the server: run as `python tests/test_hostile.py SERVE MANIFEST RESULTS`


def _serve(manifest: Path, results: Path) -> None:
    import resource
    import signal

    import torch

    torch.set_num_threads(1)
    from percept.cli import main as percept_main
    from percept.codecs import get_codec

    for name in CODECS:  # build each codec once; the children inherit them
        try:
            get_codec(name, 1)
        except Exception:
            pass
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open("/proc/self/status") as fh:
        vm_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmSize:"))
    cases = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    with open(results, "w") as out:
        for case in cases:
            err = Path(case["out"] + ".stderr")
            start = time.monotonic()
            pid = os.fork()
            if pid == 0:  # the child: limits, then the CLI
                try:
                    limit = (vm_kb + MAX_RSS_MB * 1024 + 512 * 1024) * 1024
                    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
                    resource.setrlimit(resource.RLIMIT_CPU, (CASE_TIMEOUT_S, CASE_TIMEOUT_S + 5))
                    fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    os.dup2(fd, 2)
                    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
                    code = percept_main(["decode", case["path"], case["out"]])
                    sys.stderr.flush()
                    os._exit(code)
                except BaseException:
                    import traceback

                    traceback.print_exc()
                    sys.stderr.flush()
                    os._exit(1)
            status = usage = None
            while time.monotonic() - start < CASE_TIMEOUT_S:
                got, status, usage = os.wait4(pid, os.WNOHANG)
                if got:
                    break
                time.sleep(0.002)
            else:
                os.kill(pid, signal.SIGKILL)
                _, status, usage = os.wait4(pid, 0)
                status = "hang"
            row = {
                "id": case["id"],
                "wall_s": round(time.monotonic() - start, 3),
                "maxrss_mb": round(usage.ru_maxrss / 1024, 1),
                "base_mb": round(base_kb / 1024, 1),
                "stderr": err.read_text(errors="replace") if err.exists() else "",
            }
            if status == "hang":
                row["hang"] = True
            elif os.WIFSIGNALED(status):
                row["signal"] = os.WTERMSIG(status)
            else:
                row["rc"] = os.WEXITSTATUS(status)
            out.write(json.dumps(row) + "\n")
            out.flush()


# ---------------------------------------------------------------------------------------------
# the seeds and the mutations


def pack_raw(codec: str, params, height: int, width: int, payload: bytes, blob=None) -> bytes:
    """A version-1 container with a valid CRC whatever the fields hold (container.pack checks
    them; a hostile file need not)."""
    import zlib

    if blob is None:
        blob = json.dumps(params, sort_keys=True, separators=(",", ":")).encode()
    head = b"PRCP\x01" + bytes([len(codec)]) + codec.encode()
    head += _varint(len(blob)) + blob + _varint(height) + _varint(width) + _varint(len(payload))
    body = head + payload
    return body + zlib.crc32(body).to_bytes(4, "big")


def _seeds() -> dict[str, list]:
    """Real files per codec: (record, payload) of a few small photos' crops."""
    import numpy as np
    import torch

    from percept.codecs import get_codec
    from percept.codecs.container import encode_image, unpack

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:128]
    base = np.stack([np.sin(xx / 7.0), np.cos(yy / 5.0), np.sin((xx + yy) / 11.0)], -1)
    photo = ((base * 0.4 + 0.5 + rng.normal(0, 0.05, base.shape)).clip(0, 1)).astype(np.float32)
    x = torch.from_numpy(photo).permute(2, 0, 1).unsqueeze(0)
    sizes = [(64, 64), (48, 80), (96, 128)]
    seeds: dict[str, list] = {}
    for name in CODECS:
        codec = get_codec(name, 1 if name == LEARNED else None)
        seeds[name] = [unpack(encode_image(x[..., :h, :w], codec)) for h, w in sizes]
    return seeds


def _size_fields(codec: str, payload: bytes) -> list[tuple[int, int, str]]:
    """(offset, bytes, 'h'|'w') of the size fields inside a Pillow payload's own header."""
    fields = []
    if codec == "jpeg":
        for m in re.finditer(rb"\xff[\xc0-\xc2]", payload):
            o = m.start() + 5
            fields += [(o, 2, "h"), (o + 2, 2, "w")]
            break
    elif codec == "webp":
        i = payload.find(b"\x9d\x01\x2a")
        if i >= 0:
            fields += [(i + 3, 2, "w14"), (i + 5, 2, "h14")]
        j = payload.find(b"VP8X")
        if j >= 0:
            fields += [(j + 12, 3, "w-1"), (j + 15, 3, "h-1")]
    elif codec == "jpeg2000":
        i = payload.find(b"\xff\x51")
        if i >= 0:
            fields += [(i + 6, 4, "w"), (i + 10, 4, "h")]
    elif codec == "avif":
        i = payload.find(b"ispe")
        if i >= 0:
            fields += [(i + 8, 4, "w"), (i + 12, 4, "h")]
    return fields


def _set_field(payload: bytes, offset: int, size: int, kind: str, value: int) -> bytes:
    data = bytearray(payload)
    if kind in ("w14", "h14"):
        value = min(value, 0x3FFF)
        data[offset : offset + 2] = value.to_bytes(2, "little")
    elif kind in ("w-1", "h-1"):
        data[offset : offset + 3] = max(value - 1, 0).to_bytes(3, "little")[:3]
    else:
        data[offset : offset + size] = (value % (1 << (8 * size))).to_bytes(size, "big")
    return bytes(data)


def _deep(n: int):
    value: object = 1
    for _ in range(n):
        value = {"a": value}
    return value


def mutants(n: int, seed: int = 0):
    """n structured mutants: (id, codec, header height, header width, file bytes), spread over
    the codecs in turn."""
    from percept.codecs.compressai_codec import deserialize, serialize

    rng = random.Random(seed)
    seeds = _seeds()
    sizes = [1, 2, 7, 63, 64, 65, 100, 255, 1000, 10000, 20000, 65535, 2097216]
    bad_params = [
        {"quality": "75"}, {"quality": 1.5}, {"quality": None}, {"quality": [1]},
        {"quality": 10**300}, {"quality": -1}, {"quality": True},
        {"method": "abc"}, {"method": [1]}, {"method": 2.5}, {"speed": 2.5}, {"speed": "x"},
        {"subsampling": [1]}, {"subsampling": {"a": 1}}, {"subsampling": "4:1:1"},
        {"pad": "zero/3"}, {"weights_sha256": "deadbeef"}, {"metric": 5}, {"deep": _deep(30)},
    ]  # fmt: skip
    for i in range(n):
        codec = CODECS[i % len(CODECS)]
        record = rng.choice(seeds[codec])
        h, w, params, payload = record.height, record.width, dict(record.params), record.payload
        blob = None
        label = codec
        kind = rng.randrange(9)
        if kind == 0:  # header size
            h, w = rng.choice([(h, w + 1), (h + 1, w), (w, h), (1, 1), (rng.choice(sizes), w),
                               (h, rng.choice(sizes)), (min(rng.choice(sizes), 65535),) * 2])  # fmt: skip
            h, w = min(h, 65535), min(w, 65535)
        elif kind == 1:  # header parameters of the wrong type, range or depth
            choice = rng.randrange(len(bad_params) + 2)
            if choice == len(bad_params):
                blob = b"[" * 2000 + b"]" * 2000
            elif choice == len(bad_params) + 1:
                blob = ('{"quality":' + "9" * rng.choice([400, 4086, 4400]) + "}").encode()
            else:
                params.update(bad_params[choice])
        elif kind == 2:  # the codec id: another codec's label on this payload
            label = rng.choice([c for c in CODECS if c != codec] + ["bmshj2018-factorized"])
            params = {"quality": 1}
        elif kind == 3:  # another codec's payload under this codec's header
            other = rng.choice([c for c in CODECS if c != codec])
            payload = rng.choice(seeds[other]).payload
        elif kind in (4, 5) and codec != LEARNED:  # the payload's own declared size
            fields = _size_fields(codec, payload)
            if fields:
                for offset, size, which in rng.sample(fields, rng.randint(1, len(fields))):
                    payload = _set_field(payload, offset, size, which, rng.choice(sizes))
        elif kind in (4, 5):  # the learned payload's size, latent grid, batch, string groups
            ph, pw, strings, shape = deserialize(payload)
            what = rng.randrange(8)
            if what == 0:
                ph, pw = rng.choice([(ph * 2, pw), (ph, pw + 64), (1, 1), (65535, 65535)])
            elif what == 1:
                k = rng.choice([2, 3, 4, 8, 16, 32, 64, 300])
                shape = [shape[0] * k, shape[1] * k]
            elif what == 2:
                shape = rng.choice([[1 << 63, 1], [2**40, 2**40], [0, 0], [1], [1, 1, 1], []])
            elif what == 3:
                strings = [g * rng.choice([2, 64]) for g in strings]
            elif what == 4:
                strings = rng.choice([strings[:1], strings * 2, [], [[]] * len(strings)])
            elif what == 5:
                strings = [[rng.choice([b"", b"\x00", b"\xff" * 3, g[0][: len(g[0]) // 2]])]
                           for g in strings]  # fmt: skip
            elif what == 6:
                ph, pw = rng.choice([(ph * 4, pw * 4), (ph * 8, pw * 8)])
                shape = [-(-ph // 64), -(-pw // 64)]
                h, w = ph, pw  # a consistent file for a larger image, with the small one's strings
            else:
                strings = [[bytes(rng.randrange(256) for _ in range(len(g[0])))] for g in strings]
            try:
                payload = serialize(ph, pw, strings, shape)
            except Exception:
                continue
        elif kind == 6:  # bit flips in the payload
            data = bytearray(payload)
            for _ in range(rng.choice([1, 2, 3, 8])):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            payload = bytes(data)
        elif kind == 7:  # truncated or extended payload
            cut = rng.randrange(len(payload))
            payload = rng.choice([payload[:cut], payload + bytes(rng.randrange(1, 64))])
        else:  # bytes overwritten in the first 64 of the payload (its header)
            data = bytearray(payload)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(min(64, len(data)))] = rng.randrange(256)
            payload = bytes(data)
        h, w = max(h, 1), max(w, 1)
        yield f"{i:05d}-{codec}-k{kind}", codec, h, w, pack_raw(label, params, h, w, payload, blob)


# ---------------------------------------------------------------------------------------------
# running and classifying


def run_cases(cases, workdir: Path, budget_s: float = 3600) -> list[dict]:
    """Decode every case in a forked child; returns one classified row per case."""
    workdir.mkdir(parents=True, exist_ok=True)
    manifest, results = workdir / "manifest.jsonl", workdir / "results.jsonl"
    meta = {}
    with open(manifest, "w") as fh:
        for case_id, codec, h, w, data in cases:
            path = workdir / f"{case_id}.prc"
            path.write_bytes(data)
            meta[case_id] = (codec, h, w, path)
            row = {"id": case_id, "path": str(path), "out": str(workdir / f"{case_id}.png")}
            fh.write(json.dumps(row) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, __file__, "SERVE", str(manifest), str(results)],
        check=True, timeout=budget_s, env=env,
    )  # fmt: skip
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    for row in rows:
        codec, h, w, path = meta[row["id"]]
        row["codec"], row["file"] = codec, str(path)
        row["outcome"], row["why"] = classify(row, h, w, Path(str(path)[:-4] + ".png"))
    return rows


def classify(row: dict, height: int, width: int, png: Path) -> tuple[str, str]:
    lines = row["stderr"].strip().splitlines()
    if row.get("hang"):
        return "other", "hang"
    if "signal" in row:
        return "other", f"killed by signal {row['signal']}"
    if row["maxrss_mb"] > MAX_RSS_MB:
        return "other", f"peak RSS {row['maxrss_mb']} MB"
    if row["rc"] == 2:
        if len(lines) != 1 or "out of memory" in lines[0] or "Traceback" in row["stderr"]:
            return "other", f"exit 2 with {len(lines)} lines: {' | '.join(lines)[:300]}"
        return "exit2", lines[0]
    if row["rc"] == 0:
        from PIL import Image

        if not png.is_file():
            return "other", "exit 0 without an output"
        with Image.open(png) as img:
            if img.size != (width, height):
                return "other", f"exit 0 with a {img.size} image for a {width}x{height} header"
        return "valid", ""
    return "other", f"exit {row['rc']}: {' | '.join(lines[-3:])[:300]}"


def tally(rows: list[dict]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        c = counts.setdefault(row["codec"], {"tried": 0, "exit2": 0, "valid": 0, "other": 0})
        c["tried"] += 1
        c[row["outcome"]] += 1
    return counts


def _fuzz(n: int, tmp_path: Path, seed: int) -> None:
    start = time.monotonic()
    rows = run_cases(mutants(n, seed), tmp_path / "fuzz")
    counts = tally(rows)
    peak = max(r["maxrss_mb"] for r in rows)
    wall = time.monotonic() - start
    print(f"\nfuzz {n} cases (seed {seed}) in {wall:.0f} s, peak RSS {peak} MB")
    for codec, c in counts.items():
        print(f"  {codec:<20} tried {c['tried']:>5}  exit2 {c['exit2']:>5}  valid {c['valid']:>5}  "
              f"other {c['other']:>3}")  # fmt: skip
    bad = [r for r in rows if r["outcome"] == "other"]
    if bad and os.environ.get("PERCEPT_FUZZ_KEEP"):  # grow the corpus: keep the small ones
        CORPUS.mkdir(parents=True, exist_ok=True)
        for r in bad:
            data = Path(r["file"]).read_bytes()
            if len(data) <= 4096:
                (CORPUS / Path(r["file"]).name).write_bytes(data)
    assert not bad, "\n".join(f"{r['id']}: {r['why']}" for r in bad[:20])
    assert sum(c["tried"] for c in counts.values()) >= 0.95 * n


def test_fuzz_bounded(tmp_path):
    """A few hundred mutants across the five codecs: exit 2 + one line, or a valid decode."""
    _fuzz(int(os.environ.get("PERCEPT_FUZZ_CI_CASES", "250")), tmp_path, seed=1)


@pytest.mark.slow
def test_fuzz_thousands(tmp_path):
    _fuzz(int(os.environ.get("PERCEPT_FUZZ_CASES", "3000")), tmp_path, seed=2)


def test_regression_corpus(tmp_path):
    """Every file that once crashed, bombed or printed a traceback now exits 2 with one line (or,
    for a payload that only crashed CompressAI's unbounded reads, decodes to the header's size)."""
    from percept.codecs.container import unpack
    from percept.errors import PerceptError

    files = sorted(CORPUS.glob("*.prc"))
    assert files, f"no regression files under {CORPUS}"
    cases = []
    for path in files:  # the header's size, where the header parses (a valid decode must match)
        try:
            record = unpack(path.read_bytes())
            size = (record.height, record.width)
        except PerceptError:
            size = (0, 0)
        cases.append((path.stem, "corpus", *size, path.read_bytes()))
    rows = run_cases(cases, tmp_path / "corpus")
    bad = [f"{r['id']}: {r['why']}" for r in rows if r["outcome"] == "other"]
    assert not bad, "\n".join(bad)
    assert len(rows) == len(files)


# ---------------------------------------------------------------------------------------------
# the CLI's other hostile inputs, in process


def _cli(capsys, *argv) -> tuple[int, list[str]]:
    from percept.cli import main

    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.fixture(scope="module")
def small_png(tmp_path_factory):
    import numpy as np
    from PIL import Image

    path = tmp_path_factory.mktemp("hostile") / "a.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((24, 32, 3)) * 255).astype("uint8")).save(path)
    return path


def _one_error(code, err, *words):
    assert code == 2 and len(err) == 1, (code, err)
    for word in words:
        assert word in err[0], err[0]


def test_same_input_and_output_is_refused(capsys, small_png, tmp_path):
    before = small_png.read_bytes()
    _one_error(*_cli(capsys, "encode", str(small_png), str(small_png)), "is the input")
    assert small_png.read_bytes() == before
    prc = tmp_path / "a.prc"
    assert _cli(capsys, "encode", str(small_png), str(prc))[0] == 0
    _one_error(*_cli(capsys, "decode", str(prc), str(prc)), "is the input")


def test_bad_output_paths_are_one_line(capsys, small_png, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    outs = [str(tmp_path), str(tmp_path / "x.prc") + "/", "", str(tmp_path / ("n" * 300)),
            str(tmp_path / "missing" / "x.prc")]  # fmt: skip
    if os.geteuid() != 0:  # root writes anywhere
        outs.append(str(locked / "x.prc"))
    for out in outs:
        _one_error(*_cli(capsys, "encode", str(small_png), out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked"]  # nothing partial


def test_inputs_that_are_not_files(capsys, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, words in ((tmp_path, "directory"), (fifo, "FIFO"), ("/dev/zero", "device"),
                        (tmp_path / "nope", "no such file")):  # fmt: skip
        _one_error(*_cli(capsys, "encode", str(path), str(tmp_path / "o.prc")), words)
        _one_error(*_cli(capsys, "decode", str(path), str(tmp_path / "o.png")), words)


@pytest.mark.parametrize(
    "argv",
    [
        ["--steps", "0"], ["--steps", "-1"], ["--seed", str(2**64)], ["--seed", "-1"],
        ["--sigma", "nan"], ["--sigma", "inf"], ["--sigma", "-1"], ["--sigma", "abc"],
    ],
)  # fmt: skip
def test_decode_arguments_are_checked_where_parsed(capsys, tmp_path, argv):
    _one_error(*_cli(capsys, "decode", "x.prc", str(tmp_path / "o.png"), "--enhance", "medium",
                     "--prior", "p", *argv))  # fmt: skip


def test_decode_refuses_enhancer_flags_without_enhance(capsys, tmp_path):
    for argv in (["--prior", "p"], ["--sigma", "0.1"], ["--steps", "3"], ["--seed", "1"]):
        _one_error(*_cli(capsys, "decode", "x.prc", str(tmp_path / "o.png"), *argv), "--enhance")


@pytest.mark.parametrize(
    "argv",
    [
        ["--set", "method=abc", "--codec", "webp"], ["--set", "speed=2.5", "--codec", "avif"],
        ["--set", "subsampling=1", "--codec", "jpeg"], ["--quality", "9" * 4086],
        ["--signal-sigma", "medium", "--prior", "p", "--steps", "0"],
        ["--signal-sigma", "medium", "--prior", "p", "--target-ratio", "nan"],
        ["--signal-sigma", "medium", "--prior", "p", "--seed", str(2**64)],
    ],
)  # fmt: skip
def test_encode_options_are_one_line(capsys, small_png, tmp_path, argv):
    code, err = _cli(capsys, "encode", str(small_png), str(tmp_path / "o.prc"), *argv)
    _one_error(code, err)
    assert len(err[0]) < 300
    assert not (tmp_path / "o.prc").exists()


def test_image_limits_are_one_line(capsys, tmp_path, monkeypatch):
    from PIL import Image

    wide = tmp_path / "wide.png"
    Image.new("RGB", (20000, 1)).save(wide)
    _one_error(*_cli(capsys, "encode", str(wide), str(tmp_path / "o.prc"), "--codec", "webp"),
               "16383")  # fmt: skip
    monkeypatch.setenv("PERCEPT_MAX_PIXELS", "1000")
    _one_error(*_cli(capsys, "encode", str(wide), str(tmp_path / "o.prc")), "PERCEPT_MAX_PIXELS")
    monkeypatch.setenv("PERCEPT_MAX_PIXELS", "abc")
    _one_error(*_cli(capsys, "encode", str(wide), str(tmp_path / "o.prc")), "PERCEPT_MAX_PIXELS")


def test_png_bomb_and_multipage_tiff(capsys, tmp_path):
    import struct
    import zlib

    from PIL import Image

    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk
                     + struct.pack(">I", zlib.crc32(chunk)) + b"\0" * 16)  # fmt: skip
    _one_error(*_cli(capsys, "encode", str(bomb), str(tmp_path / "o.prc")))
    tiff = tmp_path / "pages.tif"
    pages = [Image.new("RGB", (16, 16), c) for c in ("red", "blue")]
    pages[0].save(tiff, save_all=True, append_images=pages[1:])
    assert _cli(capsys, "encode", str(tiff), str(tmp_path / "t.prc"))[0] == 0


def test_outputs_get_the_umask_mode(capsys, small_png, tmp_path):
    old = os.umask(0o022)
    try:
        prc, png = tmp_path / "a.prc", tmp_path / "a.png"
        assert _cli(capsys, "encode", str(small_png), str(prc))[0] == 0
        assert _cli(capsys, "decode", str(prc), str(png))[0] == 0
        assert (prc.stat().st_mode & 0o777, png.stat().st_mode & 0o777) == (0o644, 0o644)
        os.umask(0o077)
        assert _cli(capsys, "encode", str(small_png), str(prc))[0] == 0
        assert prc.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_eval_results_are_locked(tmp_path):
    import fcntl

    from percept.errors import PerceptError
    from percept.eval.harness import results_lock

    out = tmp_path / "r.json"
    with results_lock(out):
        fd = os.open(tmp_path / ".r.json.lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
        with pytest.raises(PerceptError, match="another percept eval"):
            with results_lock(out):
                pass
    with results_lock(out):  # released
        pass


def test_interrupt_during_imports_is_one_line(tmp_path):
    """SIGINT while the subcommand's heavy imports load: exit 130 and one line."""
    import signal

    code = (
        "import os, signal, sys, threading\n"
        "from percept.cli import main\n"
        "threading.Timer(0.05, lambda: os.kill(os.getpid(), signal.SIGINT)).start()\n"
        "sys.exit(main(['codecs']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if proc.returncode == 0:
        pytest.skip("the command finished before the interrupt")
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines() == ["percept codecs: interrupted"]
    assert signal.SIGINT


if __name__ == "__main__" and sys.argv[1:2] == ["SERVE"]:
    _serve(Path(sys.argv[2]), Path(sys.argv[3]))
