"""The names of a report's files: ``molhpo report --out`` writes them, the Markdown links them."""

from __future__ import annotations

MARKDOWN_FILE = "report.md"
JSON_FILE = "report.json"
BEST_PARAMS_FILE = "best_params.json"
PLOT_FILES = {
    "history": "history.png",
    "intermediate": "intermediate.png",
    "importance": "importance.png",
    "parallel_coordinates": "parallel_coordinates.png",
    "predicted_vs_true": "predicted_vs_true.png",
}
"""Plot name -> file name."""
