"""Predictions from saved checkpoints: one model (``Predictor``) or an average (``Ensemble``).

A checkpoint (its format and keys: ``trainer.checkpoint``) holds the model family, its resolved
hyperparameters and weights, the target scaling and, since the prediction keys were added
(``trainer.checkpoint.checkpoint_inputs``), everything the featuriser needs to turn new SMILES
into the inputs the model saw in training, without the training data:

- ``rdkit_descriptors``: the descriptor names and the mean/std vectors of the training rows,
  applied exactly as ``trainer.featurize.standardize`` applied them in training;
- ``onehot_smiles``: the token alphabet and the matrix length of the training set; SMILES with
  other tokens or more tokens cannot be encoded and are refused;
- ``graph``: nothing (atom and bond features are fixed);
- ``conformers_3d``: nothing; new molecules are embedded with the training routine
  (``trainer.featurize.conformers.embed``: seeded ETKDG, force field, flat 2D fallback). A model
  trained on geometries a data set shipped (QM9) then sees ETKDG geometries instead, which
  :attr:`Predictor.geometry_differs` reports.

Predictions are in the target's units (de-standardised with ``y_mean``/``y_std``), computed in
float32 in chunks of ``PREDICT_BATCH_SIZE`` molecules under ``torch.no_grad()`` with the model
in eval mode, on the device given (a trainer gives its own; none given: the CPU). SMILES RDKit
cannot parse are refused before anything is predicted, naming them.

Checkpoints are read with ``torch.load(weights_only=True)``
(``trainer.checkpoint.read_checkpoint``): only tensors and plain containers are unpickled, so
a checkpoint on a shared volume cannot run code in a serving process.

Loaded predictors are cached per process (:func:`load_predictor`), keyed by the checkpoint's
path, modification time and size, so a service answering many requests loads each checkpoint
once and picks up a rewritten file on the next request.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem, rdBase

from molhpo.contract.errors import InvalidArgument, NotFound
from trainer.checkpoint import (
    build_from_checkpoint,
    check_checkpoint,
    featurizer_of,
    read_checkpoint,
)
from trainer.featurize import FEATURIZER_VERSION, SmilesFeatures
from trainer.featurize.conformers import compute_conformers
from trainer.featurize.descriptors import compute_descriptors, descriptor_names
from trainer.featurize.graphs import compute_graphs
from trainer.featurize.smiles import tokenize
from trainer.placement import parameter_device, report_placement

PREDICT_BATCH_SIZE = 256
"""Molecules featurised and passed through the model at once (bounds memory per request)."""

MAX_LISTED = 5
"""How many offending SMILES an error message names."""

PREDICTOR_CACHE_SIZE = 32
"""Loaded predictors kept by :func:`load_predictor` (least recently used ones are dropped)."""

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Descriptor inputs


def apply_statistics(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``values`` [n, d] standardised with ``mean`` and ``std`` [d], as float32 [n, d].

    The arithmetic of ``trainer.featurize.standardize`` (float64, then missing or non-finite
    results become 0, i.e. the training mean), so training and prediction inputs are equal
    bit for bit.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        out = (values - mean) / std
    out[~np.isfinite(out)] = 0.0
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Checking SMILES


def _listing(problems: Sequence[tuple[int, str, str]]) -> str:
    """``#i 'smiles' (why)`` for the first MAX_LISTED problems, and how many more there are."""
    shown = "; ".join(
        f"#{i} {smi!r}" + (f" ({why})" if why else "") for i, smi, why in problems[:MAX_LISTED]
    )
    more = len(problems) - MAX_LISTED
    return shown + (f"; and {more} more" if more > 0 else "")


def _as_smiles_list(smiles: Sequence[str]) -> list[str]:
    if isinstance(smiles, str | bytes):
        raise InvalidArgument(
            f"predict takes a sequence of SMILES, got the single string {smiles!r}; "
            "wrap it in a list"
        )
    out = list(smiles)
    wrong = [(i, repr(s), type(s).__name__) for i, s in enumerate(out) if not isinstance(s, str)]
    if wrong:
        raise InvalidArgument(
            f"{len(wrong)} SMILES are not strings: {_listing(wrong)}; pass str values only"
        )
    return out


def check_smiles(smiles: Sequence[str]) -> None:
    """InvalidArgument naming every SMILES (index and text, up to MAX_LISTED) that RDKit cannot
    parse or that has no atoms, the rule training tables apply to their rows."""
    bad: list[tuple[int, str, str]] = []
    with rdBase.BlockLogs():
        for i, smi in enumerate(smiles):
            mol = Chem.MolFromSmiles(smi) if smi else None
            if mol is None:
                bad.append((i, smi, ""))
            elif mol.GetNumAtoms() == 0:
                bad.append((i, smi, "no atoms"))
    if bad:
        raise InvalidArgument(
            f"{len(bad)} of {len(smiles)} SMILES cannot be parsed by RDKit: {_listing(bad)}; "
            "fix or drop them (nothing was predicted)"
        )


# ---------------------------------------------------------------------------------------------
# Predictor


class Predictor:
    """One trained model from a checkpoint, predicting targets for new SMILES.

    Build it with :meth:`from_checkpoint` (a path) or :meth:`from_payload` (a loaded dict).
    ``predict`` is safe to call from several threads at once (the model is only read).
    """

    def __init__(
        self, payload: Mapping[str, Any], *, path: Path | None = None, device: str | None = None
    ) -> None:
        where = str(path) if path is not None else "payload"
        check_checkpoint(payload, where)
        self.path = path
        self.model_name = str(payload["model"])
        self.featurizer = featurizer_of(payload)
        self.params: dict[str, object] = dict(payload["params"])
        self.y_mean = float(payload["y_mean"])
        self.y_std = float(payload["y_std"])
        self.metric = str(payload.get("metric", ""))
        self.valid_metrics: dict[str, float] = dict(payload.get("valid_metrics", {}))
        self.dataset = str(payload.get("dataset", ""))
        self.data_request: dict[str, Any] = dict(payload.get("data_request") or {})
        self.step = int(payload.get("step", 0))
        self.value = float(payload.get("value", math.nan))
        self.geometry_differs = payload.get("conformer_source") == "dataset"
        """True when the model trained on a data set's own 3D geometries (e.g. QM9's DFT
        structures) that new molecules cannot have; they get ETKDG conformers instead."""
        self._descriptor_mean: np.ndarray | None = None
        self._descriptor_std: np.ndarray | None = None
        self._alphabet: dict[str, int] = {}
        self._alphabet_tokens: tuple[str, ...] = ()
        self._max_len = 0
        self._prepare_featurizer(payload, where)
        self.requested_device = device
        """The device this predictor was handed (None: none, so the CPU)."""
        try:
            self.device = torch.device(device or "cpu")
        except RuntimeError as exc:
            raise InvalidArgument(f"invalid device {device!r} ({exc}); use e.g. cpu") from exc
        self.model = build_from_checkpoint(payload, where).to(self.device)
        if self.geometry_differs:
            log.warning(
                "checkpoint %s was trained on the data set's own 3D geometries; new molecules "
                "get RDKit ETKDG conformers, so predictions may be less accurate",
                where,
            )

    def _prepare_featurizer(self, payload: Mapping[str, Any], where: str) -> None:
        """Read and check the featuriser state the checkpoint carries."""
        if self.featurizer == "rdkit_descriptors":
            if "descriptor_mean" not in payload or "descriptor_std" not in payload:
                raise InvalidArgument(
                    f"checkpoint {where} has no descriptor statistics (descriptor_mean, "
                    "descriptor_std); it predates prediction support: re-train the model"
                )
            names = tuple(payload.get("descriptor_names", ()))
            if names and names != descriptor_names():
                raise InvalidArgument(
                    f"checkpoint {where} was trained on {len(names)} RDKit descriptors that "
                    f"differ from this RDKit's {len(descriptor_names())} (RDKit "
                    f"{rdBase.rdkitVersion}); predict with the RDKit version it was trained "
                    "with, or re-train"
                )
            self._descriptor_mean = payload["descriptor_mean"].double().numpy()
            self._descriptor_std = payload["descriptor_std"].double().numpy()
        elif self.featurizer == "onehot_smiles":
            if "smiles_alphabet" not in payload or "smiles_max_len" not in payload:
                raise InvalidArgument(
                    f"checkpoint {where} has no SMILES alphabet (smiles_alphabet, "
                    "smiles_max_len); it predates prediction support: re-train the model"
                )
            self._alphabet_tokens = tuple(str(t) for t in payload["smiles_alphabet"])
            self._alphabet = {t: i for i, t in enumerate(self._alphabet_tokens)}
            self._max_len = int(payload["smiles_max_len"])
        elif self.featurizer not in ("graph", "conformers_3d"):
            raise InvalidArgument(
                f"checkpoint {where} uses featurizer {self.featurizer!r}, which prediction does "
                "not know; choose a model of featurizer rdkit_descriptors, onehot_smiles, graph "
                "or conformers_3d"
            )
        version = payload.get("featurizer_version", FEATURIZER_VERSION)
        if version != FEATURIZER_VERSION:
            raise InvalidArgument(
                f"checkpoint {where} was trained with featurizer version {version}, this "
                f"trainer computes version {FEATURIZER_VERSION}; re-train the model"
            )

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], *, device: str | None = None) -> Predictor:
        """A predictor from a checkpoint dict already in memory."""
        return cls(payload, device=device)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], *, device: str | None = None, cache: bool = True
    ) -> Predictor:
        """The predictor of the checkpoint file at ``path``.

        With ``cache`` (the default) it comes from the process-wide cache keyed by path,
        modification time and size (:func:`load_predictor`); without, the file is read anew.
        Raises NotFound for a missing file and InvalidArgument for a file that is no
        checkpoint of a supported format.
        """
        if cache:
            return load_predictor(path, device=device)
        p = Path(path)
        return cls(read_checkpoint(p), path=p, device=device)

    @property
    def max_len(self) -> int:
        """Longest SMILES in tokens a one-hot model accepts (0 for other featurisers)."""
        return self._max_len

    def check(self, smiles: Sequence[str]) -> list[str]:
        """``smiles`` as a list after every check prediction makes, so a bad batch fails
        before any work: RDKit must parse each one, and for one-hot SMILES models every token
        must be in the training alphabet and the token count at most ``max_len``."""
        items = _as_smiles_list(smiles)
        check_smiles(items)
        if self.featurizer == "onehot_smiles":
            self._check_tokens(items)
        return items

    def _check_tokens(self, smiles: list[str]) -> None:
        unknown: list[tuple[int, str, str]] = []
        too_long: list[tuple[int, str, str]] = []
        for i, smi in enumerate(smiles):
            try:
                tokens = tokenize(smi)
            except InvalidArgument as exc:
                unknown.append((i, smi, str(exc).split(";")[0]))
                continue
            outside = sorted({t for t in tokens if t not in self._alphabet})
            if outside:
                unknown.append((i, smi, "tokens " + ", ".join(repr(t) for t in outside)))
            if len(tokens) > self._max_len:
                too_long.append((i, smi, f"{len(tokens)} tokens"))
        problems: list[str] = []
        if unknown:
            problems.append(
                f"{len(unknown)} SMILES have tokens outside the model's alphabet of "
                f"{len(self._alphabet)} tokens: {_listing(unknown)}"
            )
        if too_long:
            problems.append(
                f"{len(too_long)} SMILES are longer than the model's maximum of "
                f"{self._max_len} tokens: {_listing(too_long)}"
            )
        if problems:
            raise InvalidArgument(
                "; ".join(problems) + "; a one-hot SMILES model can only encode SMILES like "
                "its training set's: rewrite them (e.g. another SMILES of the same molecule) "
                "or use a model of another family (nothing was predicted)"
            )

    def _inputs(self, smiles: list[str]) -> torch.Tensor:
        """Standardised model outputs [len(smiles)] (float32) for one chunk of checked SMILES."""
        device = self.device
        inputs: tuple[Any, ...]
        if self.featurizer == "rdkit_descriptors":
            assert self._descriptor_mean is not None and self._descriptor_std is not None
            values = compute_descriptors(smiles).values
            x = apply_statistics(values, self._descriptor_mean, self._descriptor_std)
            inputs = (torch.from_numpy(x).to(device),)  # x [n, d]
        elif self.featurizer == "onehot_smiles":
            tokens = np.zeros((len(smiles), max(self._max_len, 1)), dtype=np.int64)
            for row, smi in enumerate(smiles):
                tokenized = tokenize(smi)
                tokens[row, : len(tokenized)] = [self._alphabet[t] for t in tokenized]
            one_hot = SmilesFeatures(
                alphabet=self._alphabet_tokens, tokens=torch.from_numpy(tokens)
            )
            inputs = (one_hot.to(device).one_hot(),)  # [n, alphabet, max_len]
        elif self.featurizer == "graph":
            packed = compute_graphs(smiles).packed.to(device)
            b = packed.batch(np.arange(len(smiles)))
            inputs = (b.x, b.edge_index, b.edge_attr, b.batch, b.num_graphs)
        else:  # conformers_3d
            conformers = compute_conformers(smiles).packed.to(device)
            c = conformers.batch(np.arange(len(smiles)))
            inputs = (c.z, c.pos, c.batch, c.num_graphs)
        report_placement("predict", self.requested_device, parameter_device(self.model), inputs)
        out: torch.Tensor = self.model(*inputs)
        return out

    def predict(self, smiles: Sequence[str], batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
        """Predicted targets [len(smiles)] (float64) in the target's units.

        All SMILES are checked first (:meth:`check`): any failure raises InvalidArgument naming
        the offending SMILES and nothing is predicted. Then chunks of ``batch_size`` molecules
        are featurised like the training set and passed through the model in eval mode.
        """
        if batch_size < 1:
            raise InvalidArgument(f"batch_size is {batch_size}; it must be at least 1, e.g. 256")
        items = self.check(smiles)
        parts: list[np.ndarray] = []
        self.model.eval()
        with torch.no_grad():
            for start in range(0, len(items), batch_size):
                out = self._inputs(items[start : start + batch_size])
                parts.append(out.float().double().cpu().numpy().reshape(-1))
        standardised = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
        return standardised * self.y_std + self.y_mean

    def __repr__(self) -> str:
        return (
            f"Predictor(model={self.model_name!r}, featurizer={self.featurizer!r}, "
            f"dataset={self.dataset!r}, step={self.step}, path={str(self.path)!r})"
        )


# ---------------------------------------------------------------------------------------------
# Ensemble


class Ensemble:
    """Several predictors of the same target; predictions are the mean over members.

    Members may be of different families (each featurises for itself). They must come from
    the same data set (same ``dataset`` name and data request), since averaging predictions of
    different targets means nothing.
    """

    def __init__(self, predictors: Sequence[Predictor]) -> None:
        members = tuple(predictors)
        if not members:
            raise InvalidArgument("an Ensemble needs at least one predictor; pass one or more")
        targets = {(p.dataset, repr(sorted(p.data_request.items()))) for p in members}
        if len(targets) > 1:
            names = sorted({p.dataset or str(p.data_request) for p in members})
            raise InvalidArgument(
                f"ensemble members were trained on different data sets ({', '.join(names)}); "
                "only average models of the same target"
            )
        self.members = members

    @classmethod
    def from_checkpoints(
        cls,
        paths: Sequence[str | os.PathLike[str]],
        *,
        device: str | None = None,
        cache: bool = True,
    ) -> Ensemble:
        """An ensemble of the checkpoints at ``paths`` (see :meth:`Predictor.from_checkpoint`)."""
        return cls([Predictor.from_checkpoint(p, device=device, cache=cache) for p in paths])

    def predict_members(
        self, smiles: Sequence[str], batch_size: int = PREDICT_BATCH_SIZE
    ) -> np.ndarray:
        """Each member's predictions, float64 [n_members, len(smiles)], in target units.

        Every member checks all SMILES first, so a bad SMILES fails before any prediction.
        """
        items = _as_smiles_list(smiles)
        for member in self.members:
            member.check(items)
        return np.stack([m.predict(items, batch_size) for m in self.members])

    def predict(self, smiles: Sequence[str], batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
        """The members' mean prediction [len(smiles)] (float64), in target units."""
        predictions: np.ndarray = self.predict_members(smiles, batch_size).mean(axis=0)
        return predictions

    def __len__(self) -> int:
        return len(self.members)


# ---------------------------------------------------------------------------------------------
# Process-wide cache


_cache: OrderedDict[tuple[str, int, int, str | None], Predictor] = OrderedDict()
_key_locks: dict[tuple[str, int, int, str | None], threading.Lock] = {}
_cache_lock = threading.Lock()


def load_predictor(path: str | os.PathLike[str], *, device: str | None = None) -> Predictor:
    """The predictor of the checkpoint at ``path``, loaded once per process.

    Keyed by the resolved path, the file's modification time and size (a rewritten checkpoint
    is loaded again) and the device (None: none given, the CPU). Thread-safe: concurrent
    callers for the same key wait for one load; other keys load in parallel. At most
    PREDICTOR_CACHE_SIZE predictors are kept.
    """
    p = Path(path)
    try:
        st = p.resolve().stat()
    except FileNotFoundError as exc:
        raise NotFound(
            f"checkpoint {p} does not exist; pass the path of an epoch-*.pt file"
        ) from exc
    resolved = str(p.resolve())
    key = (resolved, st.st_mtime_ns, st.st_size, device)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        with _cache_lock:
            hit = _cache.get(key)
        if hit is not None:
            return hit
        predictor = Predictor(read_checkpoint(p), path=p, device=device)
        with _cache_lock:
            for old in [k for k in _cache if k[0] == resolved and k[3] == device]:
                del _cache[old]  # an older version of the same file
            _cache[key] = predictor
            while len(_cache) > PREDICTOR_CACHE_SIZE:
                _cache.popitem(last=False)
            _key_locks.pop(key, None)
        return predictor


def clear_predictor_cache() -> None:
    """Forget all cached predictors (tests; or to free memory)."""
    with _cache_lock:
        _cache.clear()
        _key_locks.clear()


__all__ = [
    "PREDICT_BATCH_SIZE",
    "Ensemble",
    "Predictor",
    "apply_statistics",
    "check_smiles",
    "clear_predictor_cache",
    "load_predictor",
]
