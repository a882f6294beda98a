"""Checkpoint files: atomic, checksummed writes, verified loads, resume lookup, retention.

Layout of ``<job>/checkpoints/``::

    best_model.pt            lowest val_loss so far
    last_model.pt            end of the latest epoch, or a mid-epoch interrupt
    checkpoint_epoch_N.pt    periodic; ``apply_retention`` keeps the newest ``keep``
    <name>.sha256            sidecar per file: ``"<hex sha256>  <name>\\n"`` (``sha256sum -c`` format)
    .<name>.<pid>.<rand>.tmp temp file of a writer; ignored by readers, removed by the next save of <name>

Crash safety of :func:`save_checkpoint`. The steps are: (1) stream the state into
a temp file in the same folder, hashing the bytes as they are written; (2) check
that the temp file loads with ``weights_only=True``; (3) flush + fsync it;
(4) ``os.replace`` it onto ``<name>`` and fsync the folder; (5) write the sidecar
the same way (temp, fsync, replace, fsync the folder). A crash before (4) leaves
the old ``<name>`` and its old sidecar untouched: the old file is still valid. A
crash between (4) and (5) leaves the new data with the *old* checksum: the file is
detected as invalid and :func:`find_resume_checkpoint` falls back to the next
candidate. A file passes the check only if its bytes hash to a digest computed
while a complete write of that name was streamed, so no crash yields a file that
passes the check but is wrong.

Every load uses ``torch.load(weights_only=True)``: checkpoints hold tensors and
plain Python values only (see :mod:`trainpipe_trainer.engine.rng` for RNG states).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import torch

from trainpipe_trainer.contract.evidence import CheckpointCheck

logger = logging.getLogger(__name__)

BEST_NAME = "best_model.pt"
LAST_NAME = "last_model.pt"
CHECKSUM_SUFFIX = ".sha256"
_PERIODIC_RE = re.compile(r"^checkpoint_epoch_(\d+)\.pt$")
_CHUNK = 1 << 20


class CheckpointCorruptError(RuntimeError):
    """A checkpoint file is missing its checksum, fails it, or does not load."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(
            f"checkpoint {self.path} is corrupt ({reason}); delete it and its "
            f"{CHECKSUM_SUFFIX} sidecar, or resume from another checkpoint "
            "(find_resume_checkpoint falls back to the newest valid one)"
        )


@dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`save_checkpoint` wrote."""

    path: Path
    sha256: str
    bytes: int
    seconds: float


def periodic_checkpoint_path(ckpt_dir: Path, epoch: int) -> Path:
    """``<ckpt_dir>/checkpoint_epoch_<epoch>.pt``."""
    return Path(ckpt_dir) / f"checkpoint_epoch_{epoch}.pt"


def checksum_path(path: Path) -> Path:
    """The sidecar holding ``path``'s sha256: ``<path>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def list_periodic_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of every ``checkpoint_epoch_N.pt`` in ``ckpt_dir``, oldest epoch first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = _PERIODIC_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


# ----------------------------------------------------------------------------- writing


class _HashingWriter:
    """File-like wrapper that hashes and counts every byte torch.save writes."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self._f.write(data)
        self.sha256.update(data)
        self.bytes += len(data)
        return len(data)

    def flush(self) -> None:
        self._f.flush()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _is_temp_for(p: Path, target_name: str) -> bool:
    return p.name.startswith(f".{target_name}.") and p.name.endswith(".tmp")


def _remove_stale_temps(target: Path) -> None:
    """Remove temp files a crashed writer of ``target`` (or its sidecar) left behind."""
    for p in target.parent.iterdir():
        if _is_temp_for(p, target.name):  # also matches the sidecar's temps: ".<name>.sha256.*"
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _write_atomic(target: Path, write: Any) -> Any:
    """Call ``write(file, tmp_path)`` on a temp file next to ``target``, fsync, rename onto ``target``, fsync the folder."""
    tmp = _temp_path(target)
    try:
        with open(tmp, "wb") as f:
            result = write(f, tmp)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return result


def save_checkpoint(state: Mapping[str, Any], path: Path) -> CheckpointInfo:
    """Atomically write ``state`` to ``path`` with a ``<path>.sha256`` sidecar.

    Creates the folder if needed and first removes temp files a crashed writer of
    ``path`` left behind. See the module docstring for the crash guarantees.

    Raises:
        ValueError: ``state`` holds an object ``torch.load(weights_only=True)``
            refuses (e.g. a numpy scalar or a custom class); nothing is replaced.
        OSError: the filesystem failed (disk full, permissions); the temp file is
            removed and the previous ``path`` is left as it was (if it failed while
            writing the sidecar, ``path`` holds the new data and reads as corrupt).
        pickle.PicklingError / TypeError: ``torch.save`` cannot serialize ``state``.
    """
    start = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)

    def write_data(f: Any, tmp: Path) -> _HashingWriter:
        writer = _HashingWriter(f)
        torch.save(dict(state), cast(IO[bytes], writer))
        f.flush()
        try:  # catch unloadable contents now, not at resume time; mmap keeps it cheap
            torch.load(tmp, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            raise ValueError(f"state for {path} would not load back: {_short(exc)}") from exc
        return writer

    writer = _write_atomic(path, write_data)
    digest = writer.sha256.hexdigest()
    line = f"{digest}  {path.name}\n".encode()
    _write_atomic(checksum_path(path), lambda f, _tmp: f.write(line))
    return CheckpointInfo(
        path=path, sha256=digest, bytes=writer.bytes, seconds=time.perf_counter() - start
    )


def copy_checkpoint(source: Path, path: Path) -> CheckpointInfo:
    """Make ``path`` a verified copy of the checkpoint ``source`` without
    serializing the state again: a hard link (a copy where the filesystem has
    none) under a temp name, renamed into place, then its sidecar. Saving the
    same state as last, best and periodic costs one write, not three.

    Raises:
        CheckpointCorruptError: ``source`` fails its checksum.
        OSError: the filesystem failed; ``path`` is left as it was.
    """
    start = time.perf_counter()
    source, path = Path(source), Path(path)
    digest = verify_checksum(source)
    _remove_stale_temps(path)
    tmp = _temp_path(path)
    try:
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here (some network filesystems)
            shutil.copyfile(source, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    line = f"{digest}  {path.name}\n".encode()
    _write_atomic(checksum_path(path), lambda f, _tmp: f.write(line))
    return CheckpointInfo(path=path, sha256=digest, bytes=path.stat().st_size, seconds=time.perf_counter() - start)


# ----------------------------------------------------------------------------- reading


def _short(exc: BaseException) -> str:
    """One readable line from a torch.load error (its weights_only message is a page long)."""
    text = str(exc)
    m = re.search(r"WeightsUnpickler error: (.*?)(?: Please use|\n|$)", text)
    if m:
        return f"not loadable with weights_only=True: {m.group(1).strip()}"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_checksum(path: Path) -> str:
    """Check ``path`` against its sidecar and return the digest.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointCorruptError: the sidecar is missing or malformed (the file was
            not written by :func:`save_checkpoint`, or the write was interrupted),
            or the file's sha256 differs from it (bit rot, truncation, a crash
            between the data and sidecar renames).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    sidecar = checksum_path(path)
    try:
        recorded = sidecar.read_text(encoding="utf-8").split()
    except FileNotFoundError:
        raise CheckpointCorruptError(path, f"checksum file {sidecar.name} missing") from None
    if not recorded or not re.fullmatch(r"[0-9a-f]{64}", recorded[0]):
        raise CheckpointCorruptError(path, f"checksum file {sidecar.name} malformed")
    actual = _file_sha256(path)
    if actual != recorded[0]:
        raise CheckpointCorruptError(path, "checksum mismatch")
    return actual


def _load(path: Path, map_location: Any, mmap: bool) -> dict[str, Any]:
    verify_checksum(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:
        raise CheckpointCorruptError(path, _short(exc)) from exc
    if not isinstance(state, dict):
        raise CheckpointCorruptError(path, f"holds a {type(state).__name__}, not a dict")
    return state


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Verify ``path``'s checksum, then ``torch.load(path, weights_only=True)``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointCorruptError: checksum missing or mismatched; the file is
            truncated or not a torch file; it holds an object that
            ``weights_only`` loading refuses (arbitrary pickled Python); or it
            does not hold a dict.
    """
    return _load(Path(path), map_location, mmap=False)


def _position(state: Mapping[str, Any]) -> tuple[int, int]:
    return int(state.get("epoch", -1)), int(state.get("global_step", -1))


def find_resume_checkpoint(ckpt_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest valid checkpoint to resume from, loaded, or ``None``.

    Candidates are ``last_model.pt`` (which also receives mid-epoch interrupt
    checkpoints) and every ``checkpoint_epoch_N.pt``. They are verified newest
    mtime first; each valid one is peeked at (``mmap``, so cheap) and the winner
    is the one holding the highest ``(epoch, global_step)`` — the content, not
    the mtime, decides (newer mtime wins a tie). Every rejected file is logged
    as a warning naming it, why, and what is used instead.

    ``best_model.pt`` is not a regular candidate: it may be older than the last
    epoch, and resuming from it would silently repeat epochs. It is used only
    when no other candidate is valid, with a warning, because repeating epochs
    from a consistent state beats starting over. Temp files are ignored.

    Never raises for a bad file (it is skipped); ``OSError`` from listing the
    folder propagates.
    """
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return None
    candidates = [p for _, p in list_periodic_checkpoints(ckpt_dir)]
    if (ckpt_dir / LAST_NAME).is_file():
        candidates.append(ckpt_dir / LAST_NAME)
    candidates.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)

    rejected: list[tuple[Path, str]] = []

    def peek(p: Path) -> tuple[int, int] | None:
        try:
            return _position(_load(p, "cpu", mmap=True))
        except CheckpointCorruptError as exc:
            rejected.append((p, exc.reason))
        except (OSError, ValueError, TypeError) as exc:
            rejected.append((p, _short(exc)))
        return None

    valid = []  # (content position, -mtime rank, path): content decides, newer mtime breaks ties
    for rank, p in enumerate(candidates):
        position = peek(p)
        if position is not None:
            valid.append((position, -rank, p))
    valid.sort(reverse=True)
    order = [p for _, _, p in valid]
    if not order and (ckpt_dir / BEST_NAME).is_file() and peek(ckpt_dir / BEST_NAME) is not None:
        order = [ckpt_dir / BEST_NAME]

    for p in order:
        try:
            state = load_checkpoint(p)
        except (CheckpointCorruptError, OSError) as exc:  # changed since the scan
            rejected.append((p, getattr(exc, "reason", _short(exc))))
            continue
        for bad, why in rejected:
            logger.warning("checkpoint %s is corrupt (%s); falling back to %s", bad, why, p)
        if p.name == BEST_NAME:
            logger.warning(
                "no valid last/periodic checkpoint in %s; resuming from %s (epochs after it are repeated)",
                ckpt_dir,
                p,
            )
        return p, state
    for bad, why in rejected:
        logger.warning(
            "checkpoint %s is corrupt (%s); no valid checkpoint left, starting fresh", bad, why
        )
    return None


def _non_empty_mapping(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) > 0


def inspect_checkpoint(path: Path) -> CheckpointCheck:
    """Evidence about one checkpoint file for ``evidence.json``. Never raises."""
    path = Path(path)
    check = CheckpointCheck(path=str(path), exists=path.is_file())
    if not check.exists:
        check.error = "file does not exist"
        return check
    try:
        state = _load(path, "cpu", mmap=True)
    except (CheckpointCorruptError, OSError) as exc:
        check.error = str(exc)
        return check
    check.loads = True
    check.has_model_state = _non_empty_mapping(state.get("model_state_dict"))
    check.has_optimizer_state = _non_empty_mapping(state.get("optimizer_state_dict"))
    with contextlib.suppress(TypeError, ValueError):
        check.epoch = None if state.get("epoch") is None else int(state["epoch"])
    with contextlib.suppress(TypeError, ValueError):
        check.val_loss = None if state.get("val_loss") is None else float(state["val_loss"])
    return check


# ----------------------------------------------------------------------------- housekeeping


def _unlink_with_sidecar(path: Path) -> None:
    for p in (path, checksum_path(path)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def apply_retention(ckpt_dir: Path, keep: int = 3) -> list[Path]:
    """Delete all but the ``keep`` highest-epoch ``checkpoint_epoch_N.pt`` (and their sidecars).

    ``best_model.pt`` and ``last_model.pt`` are never touched. Returns the removed
    checkpoint paths (sidecars not listed), oldest first.

    Raises:
        ValueError: ``keep`` is negative.
        OSError: a file could not be removed.
    """
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    periodic = list_periodic_checkpoints(ckpt_dir)
    doomed = [p for _, p in periodic[: max(len(periodic) - keep, 0)]]
    for p in doomed:
        _unlink_with_sidecar(p)
    return doomed


def discard_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Explicit fresh start: remove every ``.pt``, ``.sha256`` and writer temp file in ``ckpt_dir``.

    Returns what was removed. Raises ``OSError`` if a file could not be removed.
    """
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    removed = []
    for p in sorted(ckpt_dir.iterdir()):
        is_temp = p.name.startswith(".") and p.name.endswith(".tmp")
        if p.is_file() and (p.suffix in (".pt", CHECKSUM_SUFFIX) or is_temp):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
            removed.append(p)
    return removed
