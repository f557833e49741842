"""The compile cache: machine code of compiled models, keyed by their scheduled graphs and target.

A second ``gc.compile`` of the same model runs the passes again (about 10 ms) and then finds
the object file the first one stored, keyed by the scheduled graphs: it is loaded into the JIT
without running LLVM (no IR emission, no O3, no instruction selection). Nothing is pickled:
the cache holds only object files with a checked header.

- Key: SHA-256 of the text of every scheduled graph (nodes, kernels, buffer plan, slots, the
  parameter layout), the code generator's options (``check_numerics``), the target (LLVM
  triple, CPU name, CPU features), the graphc version, the llvmlite version and the source
  text of ``graphc.codegen`` (so an edited code generator never serves machine code made by
  its old self).
- Value: the object files of ``TargetMachine.emit_object`` (the JIT compiles a model as a few
  modules, see ``codegen.target.compile_parts``), each preceded by its length (8 bytes, little
  endian), after a header holding a magic string and the SHA-256 of the payload; a file whose
  header, digest or lengths do not match is ignored, deleted and rebuilt.
- Place: ``$GRAPHC_CACHE_DIR``, else ``$XDG_CACHE_HOME/graphc``, else ``~/.cache/graphc``;
  ``GRAPHC_NO_CACHE=1`` turns it off. ``graphc cache info`` prints the folder, the entry count
  and the bytes; ``graphc cache clear`` empties it.
- Size: bounded by ``$GRAPHC_CACHE_MAX_MB`` (default 256 MB). After each write the least
  recently used entries (by modification time, which a cache hit refreshes) are removed until
  the folder fits.
  Writes go to a temporary file in the same folder, then ``os.replace``, so a reader never
  sees half a file and concurrent writers of the same key are harmless.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from graphc.ir.graph import attrs_key

MAGIC = b"graphc-object-v2\n"
DIGEST = 32  # bytes of SHA-256


def enabled() -> bool:
    """False when ``GRAPHC_NO_CACHE`` is set to anything but "", "0" or "false"."""
    return os.environ.get("GRAPHC_NO_CACHE", "").strip().lower() in ("", "0", "false")


DEFAULT_MAX_MB = 256


def cache_dir() -> Path:
    """``$GRAPHC_CACHE_DIR``, else ``$XDG_CACHE_HOME/graphc``, else ``~/.cache/graphc`` (the XDG
    base-directory rule; not created here)."""
    env = os.environ.get("GRAPHC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg).expanduser() if os.path.isabs(os.path.expanduser(xdg)) else None
    return (base or Path.home() / ".cache") / "graphc"


def max_bytes() -> int:
    """The size bound of the cache folder: ``$GRAPHC_CACHE_MAX_MB`` megabytes (default 256)."""
    raw = os.environ.get("GRAPHC_CACHE_MAX_MB", "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_MAX_MB
    except ValueError:
        mb = DEFAULT_MAX_MB
    return max(0, int(mb * 1e6))


@functools.cache
def _codegen_source_digest() -> str:
    """SHA-256 over the source files of graphc.codegen (read once per process)."""
    import graphc.codegen as cg

    h = hashlib.sha256()
    for p in sorted(Path(cg.__file__).parent.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def schedule_text(sched: Any) -> str:
    """A canonical text of one Schedule: the graph, the kernels, the buffers and the slots."""
    g = sched.graph
    # Every field of each node that changes its meaning (not loc/origin), one node a line.
    parts = [
        repr((n.name, n.op, n.inputs, str(n.type), n.attrs, n.section, n.group)) for n in g.nodes
    ]
    parts.append(repr((g.name, g.outputs, getattr(g, "updates", ()))))
    parts += [repr(k) for k in sched.kernels]
    parts += [repr(sched.buffers.get(n.name)) for n in g.nodes]
    parts.append(repr((sched.grad_bytes, sched.input_slots, sched.output_slots)))
    parts.append(
        repr(
            sorted((k, v) for k, v in vars(sched).items() if isinstance(v, (int, float, str, bool)))
        )
    )
    return _renumber("\n".join(parts))


def _renumber(text: str) -> str:
    """Rename the DSL's fresh value names (``%17``) by order of first appearance, so that the
    same model declared twice in one process (different counters) gives the same text."""
    names: dict[str, str] = {}
    return re.sub(r"%\d+", lambda m: names.setdefault(m.group(0), f"%{len(names)}"), text)


def cache_key(prog: Any, target: tuple[str, str, str]) -> str:
    """Hex SHA-256 key of a scheduled Program for ``target`` = (triple, cpu name, features)."""
    import llvmlite

    import graphc

    h = hashlib.sha256()
    for part in (
        f"graphc {graphc.__version__}",
        f"llvmlite {llvmlite.__version__}",
        _codegen_source_digest(),
        "|".join(target),
        prog.name,
        repr(sorted((k, repr(v)) for k, v in prog.layout.items())),
        f"check_numerics={getattr(prog, 'check_numerics', False)}",
    ):
        h.update(part.encode())
        h.update(b"\0")
    for entry in sorted(prog.schedules):
        h.update(entry.encode() + b"\0")
        h.update(schedule_text(prog.schedules[entry]).encode())
        # the text writes every NaN as "nan": constants' bits (NaN payloads) are keyed too
        consts = [attrs_key(n.attrs) for n in prog.schedules[entry].graph.nodes if n.op == "const"]
        h.update(repr(consts).encode())
        h.update(b"\0")
    return h.hexdigest()


def path_for(key: str, suffix: str = ".o") -> Path:
    return cache_dir() / f"{key}{suffix}"


def load(key: str, suffix: str = ".o") -> bytes | None:
    """The stored object file for ``key``; None when absent or corrupted (the file is removed)."""
    p = path_for(key, suffix)
    try:
        data = p.read_bytes()
    except OSError:
        return None
    touch(p)
    head = len(MAGIC) + DIGEST
    payload = data[head:]
    if (
        len(data) <= head
        or not data.startswith(MAGIC)
        or hashlib.sha256(payload).digest() != data[len(MAGIC) : head]
    ):
        discard(key, suffix)
        return None
    return payload


def load_objects(key: str, suffix: str = ".o") -> list[bytes] | None:
    """The object files stored by ``store_objects``; None when absent or corrupted (removed)."""
    data = load(key, suffix)
    if data is None:
        return None
    objects, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 8], "little")
        pos += 8
        if size <= 0 or pos + size > len(data):
            discard(key, suffix)
            return None
        objects.append(data[pos : pos + size])
        pos += size
    return objects or None


def store_objects(key: str, objects: list[bytes], suffix: str = ".o") -> Path | None:
    """``store`` several object files under ``key`` (each with its length before it)."""
    return store(key, b"".join(len(o).to_bytes(8, "little") + o for o in objects), suffix)


def discard(key: str, suffix: str = ".o") -> None:
    """Remove the entry for ``key`` if it exists (a bad file, or one MCJIT refused)."""
    try:
        path_for(key, suffix).unlink()
    except OSError:
        pass


def store(key: str, obj: bytes, suffix: str = ".o") -> Path | None:
    """Write ``obj`` atomically under ``key``; returns the path, or None if the folder is not
    writable (the cache is an optimization: failing to write it is not an error)."""
    d = cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=d)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + hashlib.sha256(obj).digest() + obj)
            os.replace(tmp, path_for(key, suffix))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError:
        return None
    evict()
    return path_for(key, suffix)


def entries() -> list[Path]:
    """The cache's entry files (not temporaries), oldest use first."""
    try:
        files = [p for p in cache_dir().iterdir() if not p.name.startswith(".") and p.is_file()]
    except OSError:
        return []
    stats = []
    for p in files:
        try:
            stats.append((p.stat().st_mtime, p))
        except OSError:  # removed meanwhile by another process
            continue
    return [p for _, p in sorted(stats)]


def touch(path: Path) -> None:
    """Mark an entry as just used (eviction removes the least recently used first)."""
    try:
        os.utime(path)
    except OSError:
        pass


def evict(limit: int | None = None) -> int:
    """Remove least recently used entries until the folder holds at most ``limit`` bytes
    (default ``max_bytes()``); returns the number removed. Races with other processes are
    harmless: a vanished file is skipped."""
    limit = max_bytes() if limit is None else limit
    files = entries()
    sizes = {}
    for p in files:
        try:
            sizes[p] = p.stat().st_size
        except OSError:
            sizes[p] = 0
    total, removed = sum(sizes.values()), 0
    for p in files:
        if total <= limit:
            break
        try:
            p.unlink()
            removed += 1
        except OSError:
            pass
        total -= sizes[p]
    return removed


def info() -> dict[str, Any]:
    """{"path", "entries", "bytes", "max_bytes", "enabled"} of the cache folder."""
    files = entries()
    size = 0
    for p in files:
        try:
            size += p.stat().st_size
        except OSError:
            pass
    return {
        "path": str(cache_dir()),
        "entries": len(files),
        "bytes": size,
        "max_bytes": max_bytes(),
        "enabled": enabled(),
    }


def clear() -> int:
    """Remove every entry (and stale temporaries) of the cache folder; returns the count."""
    n = 0
    try:
        items = list(cache_dir().iterdir())
    except OSError:
        return 0
    for p in items:
        if p.is_file() and (p.suffix in (".o", ".tmp") or p.name.startswith(".")):
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
    return n


def add_parser(sub: Any) -> None:
    """``graphc cache info`` and ``graphc cache clear``."""
    p = sub.add_parser(
        "cache",
        help="show or clear the compile cache",
        description=(
            "The compile cache keeps the machine code of compiled models so that compiling "
            "the same model again skips LLVM. It lives in $GRAPHC_CACHE_DIR, else "
            "$XDG_CACHE_HOME/graphc, else ~/.cache/graphc, and is bounded by "
            "$GRAPHC_CACHE_MAX_MB (default 256; least recently used entries go first)."
        ),
    )
    p.add_argument("action", choices=("info", "clear"), help="info: where and how big; clear")
    p.set_defaults(run=_run_cli)


def _run_cli(args: Any) -> int:
    if args.action == "clear":
        print(f"removed {clear()} files from {cache_dir()}")
        return 0
    i = info()
    print(f"path:    {i['path']}")
    print(f"entries: {i['entries']}")
    print(f"size:    {i['bytes'] / 1e6:.1f} MB of at most {i['max_bytes'] / 1e6:.0f} MB")
    print(f"enabled: {'yes' if i['enabled'] else 'no (GRAPHC_NO_CACHE is set)'}")
    return 0
