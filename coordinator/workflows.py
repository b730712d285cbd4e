"""Studies made from other studies: refine, evaluate and race, each on top of start_study.

A refinement searches close to a parent's best trial; an evaluation retrains the best
configurations with several seeds; a race runs one study per sampler/pruner set-up on the same
workload. Each is an ordinary study in the store, marked with the attribute that links it.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence

from coordinator.evaluation import RaceRow, race_row
from coordinator.lifecycle import StudyLifecycle, StudyStatus
from coordinator.optimizer.refine import refine_space
from coordinator.results import best_trials
from coordinator.spec import ComponentSpec, StudySpec, default_trial
from coordinator.study_runner import StudyState
from molhpo.contract import attrs
from molhpo.contract.errors import AlreadyExists, InvalidArgument, NotFound


class Workflows:
    """Refine, evaluate and race studies through the study lifecycle."""

    def __init__(self, studies: StudyLifecycle, stop: threading.Event) -> None:
        self._studies = studies
        self._stop = stop

    def refine_study(self, parent: str, name: str, percent: float, n_trials: int) -> StudyStatus:
        """A follow-up study searching close to the parent's best trial."""
        spec = self._studies.spec_of(parent)
        best = best_trials(self._studies.status(parent), 1)[0]
        child = dataclasses.replace(
            spec,
            name=name or f"{parent}-refine",
            params=refine_space(spec.params, best.params, percent or 20.0),
            n_trials=n_trials or spec.n_trials,
            enqueue_default=False,
            # Start where the parent ended: its best configuration is the child's trial 0.
            enqueued=(dict(best.params),),
        )
        return self._studies.start_study(child, system_attrs={attrs.STUDY_PARENT: parent})

    def evaluate_study(
        self,
        name: str,
        *,
        top_k: int,
        seeds: int,
        include_default: bool,
        max_epochs: int,
        evaluation_name: str,
    ) -> StudyStatus:
        """Retrain the top-k configurations (and the default) with several seeds."""
        spec = self._studies.spec_of(name)
        if top_k < 0 or seeds < 0 or max_epochs < 0:
            raise InvalidArgument("top_k, seeds and max_epochs must be >= 0 (0: the default)")
        top_k, seeds = top_k or 3, seeds or 3
        best = best_trials(self._studies.status(name), top_k)
        configs: list[tuple[str, dict[str, object]]] = [
            (f"rank-{i + 1}", dict(t.params)) for i, t in enumerate(best)
        ]
        if include_default:
            configs.append(("default", dict(default_trial(spec))))
        enqueue = [
            (params, {attrs.EVAL_CONFIG: label, attrs.EVAL_SEED_INDEX: s, "enqueued": "evaluation"})
            for s in range(seeds)
            for label, params in configs
        ]
        eval_spec = dataclasses.replace(
            spec,
            name=evaluation_name or f"{name}-eval",
            n_trials=len(enqueue),
            max_epochs=max_epochs or spec.max_epochs,
            pruner=ComponentSpec("none", {}),
            sampler=ComponentSpec("random", {}),
            enqueue_default=False,
            enqueued=(),
            extra_objectives=(),
            constraints=(),
            return_test_predictions=True,
        )
        return self._studies.start_study(
            eval_spec, system_attrs={attrs.STUDY_EVALUATION_OF: name}, enqueue=enqueue
        )

    def start_race(
        self,
        name: str,
        base: StudySpec,
        entries: Sequence[tuple[str, ComponentSpec, ComponentSpec]],
        concurrent: bool,
        target: float,
    ) -> None:
        """One study per set-up on the same workload; one after another unless concurrent."""
        specs = self._race_specs(name, base, entries)
        labels = [label for label, _, _ in entries]
        if concurrent:
            for i, s in enumerate(specs):
                self._studies.start_study(s, system_attrs=_race_attrs(name, labels, i, target))
            return
        # The first set-up starts now, so the race exists as soon as this returns.
        self._studies.start_study(specs[0], system_attrs=_race_attrs(name, labels, 0, target))
        threading.Thread(
            target=self._run_in_turn,
            args=(name, specs, labels, target),
            name=f"race-{name}",
            daemon=True,
        ).start()

    def _race_specs(
        self,
        name: str,
        base: StudySpec,
        entries: Sequence[tuple[str, ComponentSpec, ComponentSpec]],
    ) -> list[StudySpec]:
        """The race's studies, each checked, so a bad set-up refuses the whole race before any
        of it starts."""
        if not entries:
            raise InvalidArgument("entries: is empty; give at least one set-up")
        specs = []
        for i, (label, sampler, pruner) in enumerate(entries):
            if not label:
                raise InvalidArgument(f"entries[{i}].label: is empty")
            specs.append(
                dataclasses.replace(base, name=f"{name}-{label}", sampler=sampler, pruner=pruner)
            )
        for s in specs:
            self._studies.validate(s)
            if self._studies.exists(s.name):
                raise AlreadyExists(f"study {s.name!r} exists already; rename the race")
        return specs

    def _run_in_turn(
        self, name: str, specs: Sequence[StudySpec], labels: Sequence[str], target: float
    ) -> None:
        """Start each set-up after the one before it ended (the first runs already)."""
        for i, s in enumerate(specs):
            if self._stop.is_set():
                return
            if i > 0:
                self._studies.start_study(s, system_attrs=_race_attrs(name, labels, i, target))
            runner = self._studies.runner(s.name)
            while runner is not None and not runner.finished and not self._stop.is_set():
                runner.join(1.0)

    def race(self, name: str) -> tuple[list[RaceRow], float | None, bool]:
        """Rows of a race in set-up order, the target value used, whether all ended."""
        members = []
        expected = 0
        for s in self._studies.storage.get_all_studies():
            info = s.system_attrs.get(attrs.STUDY_RACE)
            if isinstance(info, dict) and info.get("race") == name:
                expected = int(info.get("n_entries", 0))
                members.append(
                    (
                        int(info["index"]),
                        str(info["label"]),
                        s.study_name,
                        float(info.get("target", 0.0)),
                    )
                )
        if not members:
            raise NotFound(f"race {name!r} does not exist")
        members.sort()
        statuses = [self._studies.status(study) for _, _, study, _ in members]
        target: float | None = members[0][3] or None
        if target is None:
            first = race_row(
                members[0][1], members[0][2], statuses[0].trials, statuses[0].directions[0], None
            )
            target = first.best_value
        rows = [
            race_row(label, study, st.trials, st.directions[0], target)
            for (_, label, study, _), st in zip(members, statuses, strict=True)
        ]
        finished = len(members) >= expected and all(
            st.state is not StudyState.RUNNING for st in statuses
        )
        return rows, target, finished


def _race_attrs(name: str, labels: Sequence[str], i: int, target: float) -> dict[str, object]:
    """The attribute that marks set-up ``i``'s study as a member of race ``name``."""
    return {
        attrs.STUDY_RACE: {
            "race": name,
            "label": labels[i],
            "index": i,
            "target": target,
            "n_entries": len(labels),
        }
    }
