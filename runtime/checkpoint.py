"""Checkpoints: a model's parameters and optimizer state in one ``.npz`` file, written atomically.

File format (numpy's ``.npz``, read with ``allow_pickle=False``: no pickle anywhere)::

    __header__        uint8[...]   UTF-8 JSON: {"format": "graphc-checkpoint", "version": 1,
                                   "model": name, "graph_hash": ..., "forward_hash": ...,
                                   "setup_hash": ...,
                                   "lr": float, "epochs_done": int | null, "extra": {...},
                                   "params": [[name, shape, dtype], ...],
                                   "state": [[name, shape, dtype], ...]}
    param/NAME        one array per trainable parameter
    state/NAME        one array per optimizer slot, and ``state/step`` (the step counter)

``graph_hash`` is a SHA-256 of the training graph's structure (ops, types, attrs and
connections, with every name replaced by its position, so that automatically numbered names
like ``dense4.w`` do not matter); ``forward_hash`` the same of the forward graph.
``setup_hash`` (absent from files of graphc before it) names what the user chose: the forward
graph, the loss and the optimizer with its options (``setup_hash``). The training graph is
derived by the compiler (autodiff, the update rules), so its hash changes with graphc's
version for one and the same network; a checkpoint fits a model when either hash agrees.

Writing goes to a temporary file in the target's directory, which is flushed, fsync'ed and then
renamed over the target (``os.replace``, atomic on POSIX and Windows): a crash leaves either the
old file or the new one, never half of one. Loading reads and checks the whole file before it
touches the model: any problem raises ``CheckpointError`` and leaves the model unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import struct
import tempfile
import tokenize
import zipfile
from typing import Any

import numpy as np

from graphc.ir.errors import CheckpointError
from graphc.ir.graph import Graph

from .parallel import in_turn_of_first

FORMAT = "graphc-checkpoint"
VERSION = 1
HEADER_KEY = "__header__"


def structure_hash(g: Graph) -> str:
    """SHA-256 (hex) of ``g``'s structure, independent of value names, locations and fusion."""
    index: dict[str, int] = {}
    h = hashlib.sha256()
    for i, n in enumerate(g.nodes):
        index[n.name] = i
        attrs = [(k, index.get(v, v) if isinstance(v, str) else v) for k, v in n.attrs]
        item = (n.op, [index.get(x, x) for x in n.inputs], str(n.type), attrs, n.section)
        h.update(repr(item).encode())
    h.update(
        repr(
            (
                [index.get(o, o) for o in g.outputs],
                [(index.get(t, t), index.get(v, v)) for t, v in g.updates],
            )
        ).encode()
    )
    return h.hexdigest()


def setup_hash(model: Any) -> str:
    """SHA-256 (hex) of what the user chose for ``model``: the forward graph's structure, the
    loss's place in it, and the optimizer's class with its options other than the learning rate
    (which a checkpoint restores) and those left at their default (so an option added by a
    later graphc leaves older files' hashes as they were). Unlike the training graph's hash, it
    does not change when graphc derives the backward pass or the update differently."""
    prog = model.program
    position = {n.name: i for i, n in enumerate(prog.forward.nodes)}
    opt = getattr(model, "optimizer", None) if prog.loss is not None else None
    chosen = chosen_options(opt)
    item = [
        structure_hash(prog.forward),
        position.get(prog.loss) if prog.loss is not None else None,
        type(opt).__name__ if opt is not None else None,
        sorted(chosen.items()),
    ]
    return hashlib.sha256(repr(item).encode()).hexdigest()


def chosen_options(opt: Any) -> dict[str, Any]:
    """The options of optimizer ``opt`` (a dataclass) that differ from their default, the
    learning rate aside: an option left at its profile's default (torch / keras:
    Optimizer.DEFAULTS, which __post_init__ fills where the field's own default is None) is
    not chosen either, so that an option a later graphc adds that way leaves setup_hash as it
    was. {} for None or a non-dataclass."""
    chosen: dict[str, Any] = {}
    if opt is None or not dataclasses.is_dataclass(opt):
        return chosen
    profile = getattr(type(opt), "DEFAULTS", {}).get(getattr(opt, "semantics", ""), {})
    for f in dataclasses.fields(opt):
        v = getattr(opt, f.name)
        if f.name not in ("lr", "learning_rate") and v != profile.get(f.name, f.default):
            chosen[f.name] = v
    return chosen


def _entries(arrays: dict[str, np.ndarray]) -> list[list[Any]]:
    return [[k, list(v.shape), v.dtype.str] for k, v in arrays.items()]


def header_for(model: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    prog = model.program
    history = getattr(model, "history", None)
    epochs = getattr(history, "epochs", None)
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": prog.name,
        "graph_hash": structure_hash(prog.training or prog.forward),
        "forward_hash": structure_hash(prog.forward),
        "setup_hash": setup_hash(model),
        "lr": float(model.lr),
        "initial_lr": float(getattr(model, "initial_lr", model.lr)),
        "epochs_done": int(epochs[-1]) + 1 if epochs else None,
        "extra": extra or {},
        "params": _entries(model.params),
        "state": _entries(model.state),
    }


# File names of other frameworks' formats: graphc's files under such a name would be taken for
# them (a Keras user's ModelCheckpoint("best.keras") or save("w.weights.h5"), a torch user's
# "model.pt") and fail to load there with an unhelpful message, so they are refused instead.
FOREIGN_SUFFIXES = {
    ".h5": "a Keras HDF5 file (Keras's load_model / load_weights)",
    ".hdf5": "a Keras HDF5 file (Keras's load_model / load_weights)",
    ".keras": "a Keras .keras archive (keras.saving.load_model)",
    ".pt": "a PyTorch file (torch.load)",
    ".pth": "a PyTorch file (torch.load)",
    ".safetensors": "a safetensors file",
    ".onnx": "an ONNX model (write one with model.to_onnx)",
    ".tflite": "a TensorFlow Lite model",
    ".pb": "a TensorFlow graph",
}


def check_file_name(
    path: str | os.PathLike,
    writes: str,
    who: str = "save",
    instead: str | None = None,
    error: type[Exception] = CheckpointError,
) -> None:
    """Refuse to write graphc's own format under another framework's file name.

    A judgement: a file named ``best.keras`` or ``w.weights.h5`` that holds graphc's numpy
    archive cannot be loaded by Keras, and its user would not know why; graphc writes only
    its own formats (``.npz`` checkpoints, ``.gcm`` model files, ONNX through ``to_onnx``),
    so the name is refused before anything is written. Any other name is written as given.

    Raises:
        CheckpointError (or ``error``): ``path`` ends in one of FOREIGN_SUFFIXES
            (case-insensitive), naming the path, what graphc would write and the names to use
            instead (``instead``: the hint for that writer).
    """
    name = os.fspath(path)
    suffix = os.path.splitext(name)[1].lower()
    if suffix in FOREIGN_SUFFIXES:
        instead = instead or (
            "Name it .npz (model.save: parameters and optimizer state) or .gcm "
            "(model.save_model: the whole model; graphc.load_model reads it); model.to_onnx "
            "writes an ONNX file"
        )
        raise error(
            f"{who}: {name!r} is named like {FOREIGN_SUFFIXES[suffix]}, but graphc would write "
            f"{writes} there, which that format's readers cannot load. {instead}. Nothing "
            "was written"
        )


@in_turn_of_first
def save(model: Any, path: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> str:
    """Write ``model``'s parameters and optimizer state (step counter included) to ``path``.

    Args:
        model: a graphc Model.
        path: the file to write (conventionally ``*.npz``; written as given).
        extra: JSON-serializable metadata kept in the header (e.g. {"epoch": 3}).

    Returns:
        The path written.

    Raises:
        CheckpointError: ``extra`` is not JSON-serializable or the file cannot be written (the
            previous file at ``path``, if any, is then left as it was); ``path`` is named
            like another framework's file (.h5, .keras, .pt, .onnx, ...: check_file_name).
    """
    path = os.fspath(path)
    from .modelfile import EXTRA_KEY

    whole = bool(extra) and EXTRA_KEY in extra
    check_file_name(
        path,
        "a graphc model file (numpy .npz archive)"
        if whole
        else "a graphc checkpoint (numpy .npz archive of parameters and optimizer state)",
        "save_model" if whole else "save",
    )
    try:
        header = json.dumps(header_for(model, extra))
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"save {path!r}: extra metadata must be JSON-serializable ({e})"
        ) from None
    arrays = {HEADER_KEY: np.frombuffer(header.encode(), dtype=np.uint8)}
    arrays.update({f"param/{k}": np.array(v, order="C") for k, v in model.params.items()})
    arrays.update({f"state/{k}": np.array(v, order="C") for k, v in model.state.items()})
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CheckpointError(
            f"cannot write checkpoint {path!r}: folder {directory!r} does not exist"
        )
    _remove_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=directory)
    except OSError as e:
        raise CheckpointError(
            f"cannot write checkpoint {path!r}: {e.strerror} (folder {directory!r})"
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise CheckpointError(f"cannot write checkpoint {path!r}: {e}") from e
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable (POSIX); not possible everywhere, hence best effort
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def _temp_prefix(path: str, pid: int | None = None) -> str:
    """Temporary files of ``save`` to ``path``: ``.NAME.PID.XXXXXXXX.tmp`` beside it."""
    return f".{os.path.basename(path)}.{os.getpid() if pid is None else pid}."


def _remove_stale_temps(path: str) -> None:
    """Delete temporary files left by killed saves to ``path`` (those of processes that no
    longer run; a live process may be writing its own). Best effort."""
    directory = os.path.dirname(os.path.abspath(path))
    base = f".{os.path.basename(path)}."
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(base) and name.endswith(".tmp")):
            continue
        pid_text = name[len(base) :].split(".", 1)[0]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == os.getpid():
            continue  # this process's own save in another thread, or a file it will remove
        try:
            os.kill(pid, 0)
            continue  # alive (or not ours to signal): maybe writing now
        except ProcessLookupError:
            pass
        except OSError:
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


# Bounds on what ``read`` takes from a file before reading it (a hostile .npz can declare huge
# arrays, expand a few KB into GB, or hold objects): members, total bytes, compression ratio.
MAX_MEMBERS = 100_000
MAX_RATIO = 2000  # uncompressed / compressed (np.savez stores; deflate cannot pass ~1032)
HEADER_ROOM = 16 << 20  # bytes allowed for the JSON header (with ``extra``) beyond the arrays
NUMERIC_KINDS = "biuf"


def _read_npz(path: str, max_bytes: int | None, kind: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz, each member's size, dtype and shape checked before its data is
    read: numeric dtypes only (no objects, no pickle), sizes matching the .npy headers, the
    total uncompressed size at most ``max_bytes`` and no member expanding more than MAX_RATIO
    times. Raises CheckpointError (its message calls the file a ``kind``)."""
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise CheckpointError(f"{kind} {path!r} holds {len(infos)} arrays: not ours")
        total = sum(i.file_size for i in infos)
        if max_bytes is not None and total > max_bytes:
            raise CheckpointError(
                f"{kind} {path!r} declares {total} bytes of arrays; this model's parameters "
                f"and state take at most {max_bytes}: not a checkpoint of this model"
            )
        for i in infos:
            if i.file_size > MAX_RATIO * max(i.compress_size, 1) + 4096:
                raise CheckpointError(
                    f"{kind} {path!r}: member {i.filename!r} expands {i.compress_size} bytes "
                    f"to {i.file_size} (a zip bomb?)"
                )
            if not i.filename.endswith(".npy"):
                raise CheckpointError(f"{kind} {path!r}: unexpected member {i.filename!r}")
            with zf.open(i) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy version {version}")
                if dtype.kind not in NUMERIC_KINDS or dtype.hasobject or dtype.fields:
                    raise CheckpointError(
                        f"{kind} {path!r}: array {i.filename[:-4]!r} has dtype {dtype}; "
                        "checkpoints hold numbers only"
                    )
                count = int(np.prod(shape, dtype=np.int64)) if shape else 1
                nbytes = count * dtype.itemsize
                header = f.tell()
                if count < 0 or header + nbytes != i.file_size:
                    raise CheckpointError(
                        f"{kind} {path!r}: array {i.filename[:-4]!r} says {dtype}{list(shape)} "
                        f"({nbytes} bytes) but holds {i.file_size - header} (the file is damaged)"
                    )
                data = f.read(nbytes)
                if len(data) != nbytes or f.read(1):  # reading to the end checks the CRC
                    raise EOFError(f"member {i.filename!r} is truncated")
            a = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
            out[i.filename[:-4]] = a
    return out


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the first 8 bytes of an HDF5 file (Keras's .h5)


def _foreign_format(path: str) -> str | None:
    """What another framework's file at ``path`` is, else None: by its first bytes (HDF5,
    safetensors' little-endian header length and JSON header, a pickle's PROTO opcode as
    torch.save's legacy format and joblib write), for a zip archive by its members (Keras 3's
    .keras: config.json and model.weights.h5; torch.save's: a data.pkl), and for a file that
    is no zip archive (graphc's .npz files are) by a name in FOREIGN_SUFFIXES (an .onnx or
    .tflite file, whose bytes carry no signature)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        if head[:8] == HDF5_SIGNATURE:
            return "an HDF5 file (Keras's .h5 weights or model)"
        if head[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
            if "config.json" in names or "model.weights.h5" in names:
                return "a Keras .keras archive"
            if any(n.endswith("data.pkl") for n in names):
                return "a PyTorch file (torch.save)"
            return None  # graphc's own .npz, or a damaged one (read_npz names the damage)
    except (OSError, zipfile.BadZipFile, ValueError):
        return None  # read_npz names the damage
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 1 << 40:
        return "a safetensors file"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        return "a pickle file (torch.save's legacy format, joblib, ...)"
    described = FOREIGN_SUFFIXES.get(os.path.splitext(path)[1].lower())
    return described.split(" (")[0] if described else None


def read(
    path: str | os.PathLike, *, max_bytes: int | None = None, kind: str = "checkpoint"
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(header, params, state) of a checkpoint file, fully read and checked for integrity.

    Every array's size, dtype and shape is checked from the zip directory and its .npy header
    before its data is read (see ``_read_npz``); ``max_bytes`` bounds the arrays' total size
    (``load`` passes what the model's parameters and state take, plus room for the header).
    ``kind`` is what error messages call the file ("checkpoint", "model file").

    Raises:
        CheckpointError: the file is missing, not a regular file, another framework's file
            (Keras's HDF5 or .keras, torch.save's, safetensors, a pickle, or a file named
            like one of FOREIGN_SUFFIXES that is no zip archive: named as such), not an .npz, truncated or
            corrupted (zip CRC), too large (``max_bytes``) or a zip bomb, holds pickled objects
            or non-numeric arrays, has no graphc header, or its arrays disagree with the header.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{kind} {path!r} does not exist or is not a regular file")
    foreign = _foreign_format(path)
    if foreign:
        raise CheckpointError(
            f"{kind} {path!r} is {foreign}, not a graphc {kind}: graphc reads only the .npz "
            "files model.save and model.save_model write. To bring another framework's "
            "model into graphc, export it to ONNX (tf2onnx, torch.onnx) and import it with "
            "graphc.from_onnx"
        )
    try:
        data = _read_npz(path, max_bytes, kind)
    except CheckpointError:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        TypeError,
        MemoryError,
        NotImplementedError,  # a compression method zipfile does not know
        RuntimeError,  # an encrypted member
        struct.error,
        SyntaxError,  # an .npy header numpy's literal parser refuses
        tokenize.TokenError,  # an .npy header numpy's tokenizer cannot finish (unclosed brackets)
    ) as e:
        raise CheckpointError(
            f"{kind} {path!r} is corrupted or truncated, or not an .npz file "
            f"({type(e).__name__}: {e}); save it again"
        ) from None
    if HEADER_KEY not in data:
        raise CheckpointError(
            f"{path!r} is an .npz file without a graphc header: not a graphc {kind} "
            "(write one with model.save or model.save_model)"
        )
    try:
        header = json.loads(data.pop(HEADER_KEY).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise CheckpointError(f"{kind} {path!r}: the header is unreadable ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(
            f"{path!r} is not a graphc {kind} (format {header.get('format') if isinstance(header, dict) else None!r})"
        )
    if header.get("version") != VERSION:
        raise CheckpointError(
            f"{kind} {path!r} has format version {header.get('version')!r}; "
            f"this graphc reads version {VERSION}"
        )
    try:
        return header, *_arrays(path, header, data)
    except (TypeError, ValueError, AttributeError) as e:  # a header of the wrong shapes
        raise CheckpointError(
            f"{kind} {path!r}: the header's array list is malformed ({e}); the file is "
            "damaged or not written by graphc"
        ) from None


def _arrays(
    path: str, header: dict[str, Any], data: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The (params, state) arrays the header lists, checked against it."""
    params, state = {}, {}
    for section, out in (("params", params), ("state", state)):
        prefix = "param/" if section == "params" else "state/"
        for name, shape, dtype in header.get(section, []):
            a = data.get(prefix + name)
            if a is None:
                raise CheckpointError(
                    f"checkpoint {path!r}: array {prefix + name} listed in the header "
                    "is missing (the file is damaged)"
                )
            if list(a.shape) != list(shape) or a.dtype.str != dtype:
                raise CheckpointError(
                    f"checkpoint {path!r}: array {prefix + name} is {a.dtype}{list(a.shape)}, "
                    f"the header says {np.dtype(dtype)}{list(shape)} (the file is damaged)"
                )
            out[name] = a
    return params, state


@in_turn_of_first
def load(
    model: Any, path: str | os.PathLike, *, weights_only: bool = False, rebuilt: bool = False
) -> dict[str, Any]:
    """Restore ``model``'s parameters (and, unless ``weights_only``, optimizer state and lr).

    Every check runs before the first copy, so on any error the model is unchanged.
    Parameters are matched by name; when the names differ (e.g. automatically numbered
    layers of a network rebuilt in the same process) but the graph structure hashes agree, by
    position.

    The optimizer state fits when the training graph's hash agrees (the same graphc), or the
    set-up's (``setup_hash``: the same network, loss and optimizer options, whatever graphc
    wrote the file), or ``rebuilt`` (the model was compiled from this file's own description:
    load_model, pickle), or, for a file written before graphc kept ``setup_hash``, the forward
    graph agrees and the optimizer slots agree in order, kind, shape and dtype (the slots name
    the optimizer's kind; torch's load_state_dict checks no more). Each array is still checked.

    Returns:
        The checkpoint's header (model, epochs_done, extra, ...).

    Raises:
        CheckpointError: see ``read``; or the checkpoint belongs to another network or
            optimizer (names, shapes, dtypes or the graph hash differ): the message lists the
            differences.
    """
    path = os.fspath(path)
    need = sum(a.nbytes for a in (*model.params.values(), *model.state.values()))
    header, params, state = read(path, max_bytes=need + HEADER_ROOM)
    prog = model.program
    same_forward = header.get("forward_hash") == structure_hash(prog.forward)
    same_graph = (
        rebuilt
        or header.get("graph_hash") == structure_hash(prog.training or prog.forward)
        or header.get("setup_hash") == setup_hash(model)
        or ("setup_hash" not in header and same_forward and _slots(state) == _slots(model.state))
    )
    if not weights_only and not same_graph:
        try:
            _match(path, "parameter", model.params, params, same_forward)
            detail = "the parameters fit; the optimizer or the loss differs"
        except CheckpointError as e:
            detail = str(e).split(": ", 1)[-1]
        raise CheckpointError(
            f"checkpoint {path!r} was saved from a different network or optimizer than model "
            f"{prog.name!r} (checkpoint model {header.get('model')!r}; training-graph hash differs: "
            f"{detail}). Build the same network with the same optimizer, or "
            "load(..., weights_only=True) to take only the parameters"
        )
    new_params = _match(path, "parameter", model.params, params, same_forward or same_graph)
    new_state: dict[str, np.ndarray] = {}
    if not weights_only:
        new_state = _match(path, "optimizer state", model.state, state, True)
    lr = header.get("lr") if not weights_only else None
    base = header.get("initial_lr") if not weights_only else None
    for what, v in (("learning rate", lr), ("initial learning rate", base)):
        if isinstance(v, (int, float)) and not (math.isfinite(v) and v >= 0):
            # checked before anything is written: model.lr rejects it (runtime/checks.py)
            raise CheckpointError(f"{path}: {what} {v!r} is not finite and >= 0")
    keep_base = getattr(model, "initial_lr", None)
    for k, v in new_params.items():
        model.params[k][...] = v
    for k, v in new_state.items():
        model.state[k][...] = v
    if isinstance(lr, (int, float)):
        model.lr = float(lr)
        # the schedules' base rate (Model.initial_lr): the checkpoint's; one written before
        # it was kept leaves the model's (its optimizer's lr), not the decayed rate
        if hasattr(model, "initial_lr"):
            model.initial_lr = float(base) if isinstance(base, (int, float)) else keep_base
    return header


def _slots(state: dict[str, np.ndarray]) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    """The optimizer's slots in order: each one's kind (``exp_avg`` of ``d.w.exp_avg``,
    ``step``), shape and dtype; not the parameter names, which automatic layer names
    (``layer_norm5`` / ``layer_norm105``) number differently in another process."""
    return [(k.rsplit(".", 1)[-1], v.shape, v.dtype) for k, v in state.items()]


def _match(
    path: str,
    what: str,
    have: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    positional_ok: bool,
) -> dict[str, np.ndarray]:
    """The checkpoint's arrays keyed by the model's names; raises CheckpointError on mismatch."""
    if set(have) != set(got):
        if (
            positional_ok
            and len(have) == len(got)
            and all(
                a.shape == b.shape and a.dtype == b.dtype
                for a, b in zip(have.values(), got.values())
            )
        ):
            return dict(zip(have, got.values()))
        missing = sorted(set(have) - set(got))
        unknown = sorted(set(got) - set(have))
        raise CheckpointError(
            f"checkpoint {path!r} does not fit this model's {what}: "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and unknown else "")
            + (f"not in the model {unknown}" if unknown else "")
            + ". Was it saved from another network?"
        )
    bad = [
        f"{k}: model {have[k].dtype}{list(have[k].shape)}, file {got[k].dtype}{list(got[k].shape)}"
        for k in have
        if have[k].shape != got[k].shape or have[k].dtype != got[k].dtype
    ]
    if bad:
        raise CheckpointError(
            f"checkpoint {path!r}: {what} shapes or dtypes differ: " + "; ".join(bad)
        )
    return {k: got[k] for k in have}
