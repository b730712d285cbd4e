"""Featurisers: molecules to model inputs, computed once per data set and shared by all trials.

``featurize(table, name)`` caches its result under a content key: a SHA-256 of the featuriser
name, FEATURIZER_VERSION and the molecules themselves (SMILES, and shipped geometries when the
featuriser uses them), so an edited user file never gets stale features and two names for the
same molecules share them. Two levels: in memory (trials run in threads of one process; a
second caller waits for the first instead of computing again) and, when a folder is set with
:func:`set_disk_cache`, on disk, shared by every trainer process on the machine and kept across
restarts. Cached results are shared: treat them as read-only. The disk cache holds pickles
written by molhpo itself; point it only at a folder no one else writes.

Most featurisers need only the SMILES (``FEATURIZERS``); ``conformers_3d`` uses the geometries a
table ships in its ``conformers`` attribute when it has them (``TABLE_FEATURIZERS``).

Trials train from device copies of these features (:func:`on_device`), also made once per
content key and device and shared: N slots training on one GPU hold one copy, not N.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from molhpo.contract.errors import InvalidArgument
from molhpo.datasets import MoleculeTable
from trainer.featurize.conformers import (
    ConformerBatch,
    ConformerFeatures,
    PackedConformers,
    compute_conformers,
    conformers_from_table,
)
from trainer.featurize.descriptors import (
    DescriptorFeatures,
    compute_descriptors,
    standardization,
    standardize,
)
from trainer.featurize.graphs import GraphBatch, GraphFeatures, PackedGraphs, compute_graphs
from trainer.featurize.smiles import SmilesFeatures, compute_onehot_smiles

FEATURIZER_VERSION = 1
"""Bump when a featuriser's output changes, so no cache mixes old and new features."""

Features = DescriptorFeatures | GraphFeatures | SmilesFeatures | ConformerFeatures

FEATURIZERS: dict[str, Callable[[list[str]], Features]] = {
    "rdkit_descriptors": compute_descriptors,
    "graph": compute_graphs,
    "onehot_smiles": compute_onehot_smiles,
    "conformers_3d": compute_conformers,
}
"""Featuriser per name; every ``ModelFamily.featurizer`` in the catalogue is a key here."""


def _shipped_conformers(table: Any) -> ConformerFeatures | None:
    """The table's own geometries (attribute ``conformers``, one per molecule), if it has any."""
    conformers = getattr(table, "conformers", None)
    return None if conformers is None else conformers_from_table(conformers)


TABLE_FEATURIZERS: dict[str, Callable[[Any], Features | None]] = {
    "conformers_3d": _shipped_conformers,
}
"""Featurisers that may take their result from the table itself; None means "compute it"."""

log = logging.getLogger(__name__)

_cache: dict[str, Features] = {}
_key_locks: dict[str, threading.Lock] = {}
_registry_lock = threading.Lock()
_content_keys: dict[int, str] = {}
"""Content key of each object in ``_cache``, by id (the cache keeps them alive)."""
_device_copies: weakref.WeakValueDictionary[tuple[str, str, str], Any] = (
    weakref.WeakValueDictionary()
)
"""(content key, device, part) -> what ``on_device`` built, while anyone holds it."""
_recent_on_device: dict[str, list[Any]] = {}
"""Per device, the KEEP_ON_DEVICE device copies used last (held here, so they stay)."""
KEEP_ON_DEVICE = 4
"""Device copies kept per device when no trial uses them (a data set's features are one)."""

T = TypeVar("T")


class _DiskCache:
    """Where features are kept on disk, if anywhere (set once by the trainer process)."""

    folder: Path | None = None


_disk = _DiskCache()


def set_disk_cache(folder: Path | None) -> None:
    """Keep features on disk under ``folder`` too (None: memory only)."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    _disk.folder = folder


def content_key(table: Any, featurizer_name: str) -> str:
    """SHA-256 over what the features depend on: featuriser, version, molecules, geometries."""
    h = hashlib.sha256(f"{featurizer_name}\0{FEATURIZER_VERSION}\0".encode())
    for smiles in table.smiles:
        h.update(smiles.encode())
        h.update(b"\n")
    conformers = getattr(table, "conformers", None)
    if featurizer_name in TABLE_FEATURIZERS and conformers is not None:
        for c in conformers:
            h.update(np.ascontiguousarray(c.z).tobytes())
            h.update(np.ascontiguousarray(c.pos).tobytes())
    return h.hexdigest()


def _disk_load(key: str) -> Features | None:
    if _disk.folder is None:
        return None
    path = _disk.folder / f"{key}.pt"
    if not path.exists():
        return None
    try:
        loaded: Features = torch.load(path, weights_only=False)
    except Exception as err:  # a torn or foreign file: recompute and overwrite it
        log.warning("feature cache %s unreadable (%s); recomputing", path, err)
        return None
    return loaded


def _disk_store(key: str, features: Features) -> None:
    folder = _disk.folder
    if folder is None:
        return
    # Write then rename, so a trainer reading concurrently never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            torch.save(features, out)
        os.replace(tmp, folder / f"{key}.pt")
    except OSError as err:
        log.warning("could not write feature cache: %s", err)
        Path(tmp).unlink(missing_ok=True)


def featurize(table: MoleculeTable, featurizer_name: str) -> Features:
    """Features of every molecule of ``table`` by featuriser ``featurizer_name``.

    Computed on the first call per content key (see the module docstring), or read from the
    disk cache; later calls, from any thread, return the same object. Unknown featurisers raise
    InvalidArgument listing the valid names.
    """
    compute = FEATURIZERS.get(featurizer_name)
    if compute is None:
        raise InvalidArgument(
            f"unknown featurizer '{featurizer_name}'; choose one of: "
            f"{', '.join(sorted(FEATURIZERS))}"
        )
    key = content_key(table, featurizer_name)
    with _registry_lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:  # one thread computes; others for the same key wait, others keys run freely
        cached = _cache.get(key)
        if cached is None:
            cached = _disk_load(key)
            if cached is None:
                from_table = TABLE_FEATURIZERS.get(featurizer_name)
                shipped = None if from_table is None else from_table(table)
                cached = compute(table.smiles) if shipped is None else shipped
                _disk_store(key, cached)
            with _registry_lock:
                _cache[key] = cached
                _content_keys[id(cached)] = key
        return cached


def _device_name(device: torch.device) -> str:
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def on_device(features: Features, device: torch.device, part: str, build: Callable[[], T]) -> T:
    """``build()``, a device form of ``features`` (``part`` names which, e.g. "packed"), made
    once per (content key, device, part) and shared by every trial; treat it as read-only.

    On CUDA the calling thread's current stream (a trial's own, see
    ``trainer.training.streams``) is recorded on the copy's tensors, so their memory is not
    reused before that stream's work on them is done, even when it is freed from elsewhere.

    A copy stays while a trial holds it, and the KEEP_ON_DEVICE copies used last on each device
    stay after that (the next trial of a study finds its data there); older ones are freed once
    their last trial ends, so a trainer serving many data sets does not fill its GPU with them.
    ``features`` must come from :func:`featurize` to be shared; any other object has no content
    key and gets its own ``build()`` at every call. On CUDA the copy is complete before it is
    shared (its stream is synchronised once), so trials on other streams may read it at once.
    """
    with _registry_lock:
        key = _content_keys.get(id(features))
        if key is None or _cache.get(key) is not features:
            key = None
    if key is None:
        return build()
    name = (key, _device_name(device), part)
    with _registry_lock:
        found = _device_copies.get(name)
        if found is not None:
            _keep_recent(name[1], found)
            return _used_on_this_stream(found, device)
        lock = _key_locks.setdefault("\0".join(name), threading.Lock())
    with lock:
        with _registry_lock:
            found = _device_copies.get(name)
            if found is not None:
                _keep_recent(name[1], found)
                return _used_on_this_stream(found, device)
        built = build()
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()
        with _registry_lock:
            _device_copies[name] = built
            _keep_recent(name[1], built)
        return built


def _tensors(value: object) -> list[torch.Tensor]:
    """The tensors in ``value``: itself, or the fields of a features dataclass and tuples."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, tuple):
        return [t for v in value for t in _tensors(v)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [t for f in dataclasses.fields(value) for t in _tensors(getattr(value, f.name))]
    return []


def _used_on_this_stream(copy: T, device: torch.device) -> T:
    """``copy``, its CUDA tensors recorded as used by the current stream (see on_device)."""
    if device.type == "cuda":
        stream = torch.cuda.current_stream(device)
        for tensor in _tensors(copy):
            tensor.record_stream(stream)
    return copy


def _keep_recent(device: str, copy: object) -> None:
    """Put ``copy`` first among the device's recent copies (call with _registry_lock held)."""
    recent = [c for c in _recent_on_device.get(device, []) if c is not copy]
    _recent_on_device[device] = [copy, *recent][:KEEP_ON_DEVICE]


def clear_cache() -> None:
    """Forget all cached features and their device copies (for tests and memory pressure)."""
    with _registry_lock:
        _cache.clear()
        _key_locks.clear()
        _content_keys.clear()
        _device_copies.clear()
        _recent_on_device.clear()


__all__ = [
    "FEATURIZERS",
    "FEATURIZER_VERSION",
    "TABLE_FEATURIZERS",
    "ConformerBatch",
    "ConformerFeatures",
    "DescriptorFeatures",
    "Features",
    "GraphBatch",
    "GraphFeatures",
    "PackedConformers",
    "PackedGraphs",
    "SmilesFeatures",
    "clear_cache",
    "content_key",
    "featurize",
    "on_device",
    "set_disk_cache",
    "standardization",
    "standardize",
]
