"""The report of the usual molhpo study, built once for the report tests."""

from __future__ import annotations

import optuna
import pytest
from reporting_studies import PREDICTIONS, molhpo_study

from coordinator.reporting import Report, build_report


@pytest.fixture(scope="session")
def main_report() -> tuple[optuna.Study, Report]:
    """:func:`reporting_studies.molhpo_study` and its report with test-set predictions."""
    study = molhpo_study()
    return study, build_report(study, predictions=PREDICTIONS)
