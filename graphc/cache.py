"""The compile cache: machine code of compiled models, keyed by their scheduled graphs and target.

A second ``gc.compile`` of the same model runs the passes again (about 10 ms) and then finds
the object file the first one stored, keyed by the scheduled graphs: it is loaded into the JIT
without running LLVM (no IR emission, no O3, no instruction selection). Nothing is pickled:
the cache holds only object files with a checked header.

- Key: SHA-256 of the text of every scheduled graph (nodes, kernels, buffer plan, slots, the
  parameter layout), the code generator's options (``check_numerics``), the target (LLVM
  triple, CPU name, CPU features), the graphc version, the llvmlite version and the source
  text of ``graphc.codegen`` (so an edited code generator never serves machine code made by
  its old self). Value names are replaced by their order of first appearance, so the same
  model declared twice in one process (automatic names such as ``dense4.w`` and ``%17`` come
  from a process-wide counter) has one key.
- Value: the object files of ``TargetMachine.emit_object`` (the JIT compiles a model as a few
  modules, see ``codegen.target.compile_parts``), each preceded by its length (8 bytes, little
  endian), after a header holding a magic string and an HMAC-SHA256 of the key and the payload
  under a secret of this cache folder (``.secret``: 32 random bytes, mode 0600, made on first
  use). A file whose header, MAC or lengths do not match, or whose objects are not well-formed
  ELF relocatable files (header, section table, symbol and relocation tables all inside the
  file and pointing at existing entries), is ignored, deleted and rebuilt: machine code is
  handed to LLVM's loader only when it was written by graphc for this very key.
- Place: ``$GRAPHC_CACHE_DIR``, else ``$XDG_CACHE_HOME/graphc``, else ``~/.cache/graphc``;
  ``GRAPHC_NO_CACHE=1`` turns it off. ``graphc cache info`` prints the folder, the entry count
  and the bytes; ``graphc cache clear`` empties it.
- Size: bounded by ``$GRAPHC_CACHE_MAX_MB`` (default 256 MB). After each write the least
  recently used entries (by modification time, which a cache hit refreshes) are removed until
  the folder fits.
  Writes go to a temporary file in the same folder, then ``os.replace``, so a reader never
  sees half a file and concurrent writers of the same key are harmless.

Trust. The cache holds machine code that this process will run, so whoever can write it can
run code in every process that compiles a cached model. The folder is created with mode 0700;
a folder (or secret) not owned by the current user, or writable by its group or by others, is
refused: graphc then compiles without the cache and says so once per process (CacheWarning).
Entries are opened without following symbolic links (``O_NOFOLLOW``) and without blocking
(``O_NONBLOCK``: a FIFO at an entry's name cannot hang the process), and are read only when
they are regular files owned by the user and not writable by group or others; anything else is
skipped with the same single warning and the model is compiled.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import os
import re
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Any

from graphc.codegen.elf import elf_problem
from graphc.ir.graph import attrs_key

MAGIC = b"graphc-object-v3\n"
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
        mb = math.nan
    if not 0 <= mb < math.inf:  # the cache is best effort: a warning, not a failed compile
        warnings.warn(
            f"GRAPHC_CACHE_MAX_MB={raw!r} is not a number of megabytes >= 0; using the default "
            f"{DEFAULT_MAX_MB}",
            stacklevel=2,
        )
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
    """A canonical text of one Schedule: the graph, the kernels, the buffers and the slots
    (value names as they are; ``cache_key`` renames them)."""
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
    return "\n".join(parts)


_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'")


def _rename(text: str, names: set[str]) -> str:
    """Replace every quoted value name of ``text`` (``'dense4.w'``, ``'%17'``) by ``'#k'``, k its
    order of first appearance, so that the same model declared twice in one process (names
    drawn from a process-wide counter) gives the same text. Other quoted strings (ops, attrs,
    dtypes) stay; a string is renamed everywhere or nowhere, so two texts are equal only when
    the programs are equal up to a one-to-one renaming of their values."""
    seen: dict[str, str] = {}

    def sub(m: re.Match) -> str:
        s = m.group(1)
        if s not in names:
            return m.group(0)
        return "'" + seen.setdefault(s, f"#{len(seen)}") + "'"

    return _QUOTED.sub(sub, text)


def _checks_text(prog: Any) -> str:
    """The entries' native input checks (codegen/checks.py) by input slot, not by name."""
    out = []
    for entry, checks in sorted(getattr(prog, "input_checks", {}).items()):
        slots = prog.schedules[entry].input_slots
        out.append(
            f"{entry}:"
            + ",".join(f"{slots.index(c.name)}/{c.kind}/{c.bound}/{c.low}" for c in checks)
        )
    return "input_checks=" + ";".join(out)


def cache_key(prog: Any, target: tuple[str, str, str]) -> str:
    """Hex SHA-256 key of a scheduled Program for ``target`` = (triple, cpu name, features)."""
    import llvmlite

    import graphc

    src = prog.training or prog.forward
    names = set(prog.layout)
    for sched in prog.schedules.values():
        names.update(n.name for n in sched.graph.nodes)
    # the layout in graph order (sorting by name would depend on the names)
    order = [n.name for n in src.nodes if n.name in prog.layout]
    order += sorted(set(prog.layout) - set(order))
    text = [repr([(k, prog.layout[k]) for k in order])]
    for entry in sorted(prog.schedules):
        text.append(entry)
        text.append(schedule_text(prog.schedules[entry]))
        # the text writes every NaN as "nan": constants' bits (NaN payloads) are keyed too
        consts = [attrs_key(n.attrs) for n in prog.schedules[entry].graph.nodes if n.op == "const"]
        text.append(repr(consts))
    h = hashlib.sha256()
    for part in (
        f"graphc {graphc.__version__}",
        f"llvmlite {llvmlite.__version__}",
        _codegen_source_digest(),
        "|".join(target),
        prog.name,
        f"check_numerics={getattr(prog, 'check_numerics', False)}",
        _rename("\0".join(text), names),
        _checks_text(prog),
    ):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------- trust (see the module doc)


class CacheWarning(UserWarning):
    """The compile cache was refused (ownership, permissions, file type); graphc compiled."""


_warned: set[str] = set()
MAX_ENTRY_BYTES = 1 << 30  # an entry larger than this is not ours
SECRET = ".secret"


def _warn(what: str) -> None:
    """One CacheWarning per process and folder (the first refusal says why)."""
    folder = str(cache_dir())
    if folder in _warned:
        return
    _warned.add(folder)
    warnings.warn(
        f"graphc compile cache {folder}: {what}; compiling without the cache (see "
        "graphc.cache: the folder and its entries must belong to you and be writable only by "
        "you)",
        CacheWarning,
        stacklevel=3,
    )


def _private(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _folder(create: bool) -> Path | None:
    """The cache folder when it is trusted (made 0700 when ``create`` and absent), else None."""
    d = cache_dir()
    try:
        st = os.stat(d)
    except FileNotFoundError:
        if not create:
            return None
        try:
            d.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(d, 0o700)
            st = os.stat(d)
        except FileExistsError:
            st = os.stat(d)
        except OSError:
            return None
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        _warn("not a folder")
        return None
    if not _private(st):
        _warn(
            f"the folder is owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o} "
            f"(needs uid {os.geteuid()}, not writable by group or others)"
        )
        return None
    return d


def _open_private(path: Path, flags: int = os.O_RDONLY) -> int | None:
    """A descriptor of ``path`` when it is a regular file owned by the user and writable by
    nobody else, opened without following links or blocking; None when absent (and, with a
    warning, when it is anything else)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        _warn(f"cannot open {path.name} ({e.strerror}: a symbolic link or unreadable)")
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or not _private(st) or st.st_size > MAX_ENTRY_BYTES:
        os.close(fd)
        _warn(
            f"{path.name} is not a regular file of yours writable only by you "
            f"(mode {st.st_mode:o}, uid {st.st_uid})"
        )
        return None
    return fd


def _read_fd(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as f:
        return f.read(MAX_ENTRY_BYTES + 1)


def _secret(folder: Path) -> bytes | None:
    """This folder's MAC key (made on first use, mode 0600); None when it cannot be trusted."""
    path = folder / SECRET
    fd = _open_private(path)
    if fd is None and not path.exists() and not path.is_symlink():
        try:
            wfd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass  # another process made it just now
        except OSError:
            return None
        else:
            with os.fdopen(wfd, "wb") as f:
                f.write(os.urandom(DIGEST))
        fd = _open_private(path)
    if fd is None:
        return None
    data = _read_fd(fd)
    if len(data) != DIGEST:
        return None  # still being written by another process, or damaged: not now
    return data


def _mac(secret: bytes, key: str, payload: bytes) -> bytes:
    return hmac.new(secret, key.encode() + b"\0" + payload, hashlib.sha256).digest()


# ---------------------------------------------------------------- entries


def path_for(key: str, suffix: str = ".o") -> Path:
    return cache_dir() / f"{key}{suffix}"


def load(key: str, suffix: str = ".o") -> bytes | None:
    """The stored payload for ``key``; None when absent, refused (see the module doc) or
    corrupted (then the file is removed)."""
    folder = _folder(create=False)
    if folder is None:
        return None
    fd = _open_private(path_for(key, suffix))
    if fd is None:
        return None
    data = _read_fd(fd)
    secret = _secret(folder)
    touch(path_for(key, suffix))  # least recently used goes first (evict)
    head = len(MAGIC) + DIGEST
    payload = data[head:]
    if (
        secret is None
        or len(data) <= head
        or not data.startswith(MAGIC)
        or not hmac.compare_digest(_mac(secret, key, payload), data[len(MAGIC) : head])
    ):
        discard(key, suffix)
        return None
    return payload


def load_objects(key: str, suffix: str = ".o") -> list[bytes] | None:
    """The object files stored by ``store_objects``; None when absent, refused or corrupted
    (lengths, or an object that is not well-formed ELF: see ``elf_problem``; then removed)."""
    data = load(key, suffix)
    if data is None:
        return None
    objects, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 8], "little")
        pos += 8
        if size <= 0 or pos + size > len(data) or elf_problem(data[pos : pos + size]):
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
    """Write ``obj`` atomically under ``key`` (mode 0600); returns the path, or None if the
    folder is refused or not writable (the cache is an optimization: failing to write it is
    not an error)."""
    d = _folder(create=True)
    if d is None:
        return None
    secret = _secret(d)
    if secret is None:
        return None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=d)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + _mac(secret, key, obj) + obj)
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
        if p.is_file() and p.suffix in (".o", ".tmp"):  # entries and temporaries, not .secret
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
