"""Study reports: what the store says about a study, what it concludes, its plots and its
Markdown, returned as values (text and PNG bytes) by :func:`build_report`.

- :mod:`~coordinator.reporting.facts`: the study's setup, its trials, their effort and ranking
- :mod:`~coordinator.reporting.analysis`: convergence warnings, failure groups, the default
  configuration against the best, parameter importance, prediction errors
- :mod:`~coordinator.reporting.plots`: each plot as PNG bytes
- :mod:`~coordinator.reporting.markdown`: the Markdown, one function per section
- :mod:`~coordinator.reporting.report`: :func:`build_report`, the one entry point
"""

from __future__ import annotations

from coordinator.reporting.report import Report, build_report

__all__ = ["Report", "build_report"]
