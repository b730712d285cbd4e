"""The artifact store: checkpoints and best models of trials, on a filesystem.

One machine: a folder under the state directory. A cluster: a shared volume (or an object
store mounted as one) that every trainer and the coordinator see at the same path. Layout::

    {root}/{study}/trial-{number:05d}/epoch-{step:05d}.pt   top-k checkpoints of a trial
    {root}/{study}/trial-{number:05d}/index.json            which ones, by objective value

Files are written to a temporary name and renamed, so a reader never sees half a checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from molhpo.contract.enums import Direction
from molhpo.contract.errors import InvalidArgument, NotFound

_SAFE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


def _check_name(study: str) -> str:
    if not _SAFE.fullmatch(study) or study in (".", ".."):
        raise InvalidArgument(f"study name {study!r} cannot name an artifact folder")
    return study


@dataclass(frozen=True)
class ArtifactStore:
    """Checkpoints under ``root``."""

    root: Path

    def trial_dir(self, study: str, trial_number: int) -> Path:
        """The folder of one trial's artifacts."""
        return self.root / _check_name(study) / f"trial-{trial_number:05d}"

    def write(self, path: Path, payload: dict[str, Any]) -> None:
        """Write a checkpoint atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                torch.save(payload, out)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def read(self, path: Path) -> dict[str, Any]:
        """Load a checkpoint written by :meth:`write` (tensors on the CPU)."""
        if not path.exists():
            raise NotFound(f"checkpoint {path} does not exist")
        payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
        return payload

    def index(self, study: str, trial_number: int) -> list[dict[str, Any]]:
        """The kept checkpoints of a trial, best first: [{step, value, file}]."""
        p = self.trial_dir(study, trial_number) / "index.json"
        if not p.exists():
            return []
        data = json.loads(p.read_text())
        return list(data) if isinstance(data, list) else []

    def best(self, study: str, trial_number: int) -> Path:
        """The best kept checkpoint of a trial."""
        entries = self.index(study, trial_number)
        if not entries:
            raise NotFound(f"trial {trial_number} of study {study!r} has no checkpoint")
        return self.trial_dir(study, trial_number) / str(entries[0]["file"])


class TopKCheckpoints:
    """Keeps the ``k`` best checkpoints of one trial by objective value."""

    def __init__(
        self, store: ArtifactStore, study: str, trial_number: int, k: int, direction: str
    ) -> None:
        if k < 1:
            raise InvalidArgument(f"keep_checkpoints is {k}, but must be >= 1")
        self._store = store
        self._dir = store.trial_dir(study, trial_number)
        self._k = k
        self._sign = -1.0 if direction == Direction.MAXIMIZE else 1.0
        self._entries = store.index(study, trial_number)

    def wants(self, value: float) -> bool:
        """Whether a checkpoint of this value would be kept."""
        if len(self._entries) < self._k:
            return True
        worst = self._entries[-1]["value"]
        return self._sign * value < self._sign * float(worst)

    def save(self, step: int, value: float, payload: dict[str, Any]) -> Path:
        """Keep this checkpoint if it is among the best k; drop the one it displaces."""
        name = f"epoch-{step:05d}.pt"
        path = self._dir / name
        self._store.write(path, {**payload, "step": step, "value": value})
        self._entries = [e for e in self._entries if e["step"] != step]
        self._entries.append({"step": step, "value": value, "file": name})
        self._entries.sort(key=lambda e: self._sign * float(e["value"]))
        for dropped in self._entries[self._k :]:
            (self._dir / str(dropped["file"])).unlink(missing_ok=True)
        self._entries = self._entries[: self._k]
        tmp = self._dir / "index.json.tmp"
        tmp.write_text(json.dumps(self._entries))
        os.replace(tmp, self._dir / "index.json")
        return path

    @property
    def best_path(self) -> Path | None:
        """The best checkpoint kept so far."""
        return self._dir / str(self._entries[0]["file"]) if self._entries else None


class ResumeFile:
    """The state a trial resumes from when it is dispatched again: ``resume.pt`` in its folder.

    Saved every ``every`` epochs by the training loop; read only by later attempts.
    """

    def __init__(self, store: ArtifactStore, study: str, trial_number: int, every: int) -> None:
        if every < 1:
            raise InvalidArgument(f"checkpoint_every is {every}, but must be >= 1")
        self.every = every
        self._store = store
        self.path = store.trial_dir(study, trial_number) / "resume.pt"

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none (or it cannot be read)."""
        if not self.path.exists():
            return None
        try:
            return self._store.read(self.path)
        except Exception:  # a torn or foreign file: start over rather than fail the trial
            return None

    def save(self, state: dict[str, Any]) -> None:
        """Replace the saved state (atomically)."""
        self._store.write(self.path, state)

    def clear(self) -> None:
        """Forget the saved state (a trial that ended needs none)."""
        self.path.unlink(missing_ok=True)
