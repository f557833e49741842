"""Writers and the command line on a full disk, an unwritable folder or a bad number: a
GraphcError (or argparse's usage error, exit code 2) naming the file and the errno, never a raw
traceback; the files that were there stay intact and no temporary file is left behind."""

from __future__ import annotations

import hashlib
import os
import resource
import signal

import numpy as np
import pytest

import graphc as gc
from graphc.cli import main
from graphc.ir.errors import ArgumentError

MODELS = "examples/models.py"


@pytest.fixture(scope="module")
def small():
    x = gc.input("x", ("N", 4))
    y = gc.input("y", ("N",), dtype="i32")
    out = gc.dense(x, 3, name="d")
    return gc.compile(out, loss=gc.softmax_cross_entropy(out, y), name="small_w")


def _digest(folder):
    return {
        f: hashlib.sha256(open(os.path.join(folder, f), "rb").read()).hexdigest()
        for f in sorted(os.listdir(folder))
    }


def test_export_on_a_full_disk_keeps_old_files(small, tmp_path):
    lib = tmp_path / "libsmall.so"
    small.export(str(lib))
    small.export(str(tmp_path / "small.ll"), emit="llvm")
    before = _digest(tmp_path)
    small.params["d.w"][...] += 1.0  # the new export would differ
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limit[1]))
    try:
        for path, opts in [(lib, {}), (tmp_path / "small.ll", {"emit": "llvm"})]:
            with pytest.raises(ArgumentError, match=r"EFBIG") as e:
                small.export(str(path), **opts)
            assert "nothing was written" in str(e.value)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, old)
    assert _digest(tmp_path) == before  # the old library, header and IR intact, no leftovers


def test_cli_dump_dir_unwritable(capsys):
    rc = main(["dump", f"{MODELS}:digits", "--dump-dir", "/proc/graphc_no_such_dir"])
    err = capsys.readouterr().err
    assert rc == 2 and "ArgumentError" in err and "/proc/graphc_no_such_dir" in err
    assert "ENOENT" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["compile", f"{MODELS}:digits", "-o", "OUT", "--seed", "-1"],
        ["compile", f"{MODELS}:digits", "-o", "OUT", "--seed", str(2**64)],
        ["compile", f"{MODELS}:digits", "-o", "OUT", "--seed", "1.5"],
        ["dump", f"{MODELS}:digits", "--stats", "--batch", "0"],
        ["dump", f"{MODELS}:digits", "--stats", "--batch", str(2**40)],
    ],
)
def test_cli_numeric_options_refused_by_argparse(argv, capsys, tmp_path):
    lib = str(tmp_path / "never.so")
    with pytest.raises(SystemExit) as e:
        main([lib if a == "OUT" else a for a in argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument" in err and "Traceback" not in err
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True])
def test_seed_refused_in_python(small, seed):
    with pytest.raises(ArgumentError, match="seed"):
        small.initialize(seed)
    with pytest.raises(ArgumentError, match="seed"):
        small.fit(np.ones((4, 4), np.float32), np.zeros(4, np.int32), seed=seed, verbose=0)
    x = gc.input("x", ("N", 2))
    with pytest.raises(ArgumentError, match="seed"):
        gc.compile(gc.relu(x), name="seeded", seed=seed)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_csv_logger_on_a_full_disk(small):
    before = small.get_weights()
    with pytest.raises(ArgumentError, match=r"CSVLogger: cannot write '/dev/full'.*Errno 28"):
        small.fit(
            np.ones((4, 4), np.float32),
            np.zeros(4, np.int32),
            epochs=1,
            verbose=0,
            callbacks=[gc.CSVLogger("/dev/full")],
        )
    assert any(not np.array_equal(before[k], v) for k, v in small.get_weights().items())


def test_plot_to_unwritable_path():
    from graphc.plot import have_matplotlib, learning_curves

    if not have_matplotlib():
        pytest.skip("matplotlib is not installed")
    with pytest.raises(gc.GraphcError, match="/proc/graphc_no_such_dir"):
        learning_curves({"loss": [1.0, 0.5]}, "/proc/graphc_no_such_dir/c.png")
