"""lm-evaluation-harness results on the leaderboard: reading results files, benchmark columns, correlation.

* ``read_harness_file`` / ``parse_harness_json`` turn a results file (0.3.x or 0.4.x) into a
  ``HarnessRun`` of normalised ``HarnessRow``s, or raise ``HarnessFileError``; ``rows_to_json``
  prints rows for a dry run.
* ``OPEN_LLM_V1`` / ``OPEN_LLM_V2`` / ``custom_column_set`` describe benchmark columns;
  ``evaluate`` computes one model's columns from its rows.
* ``correlate`` / ``correlate_columns`` relate arena scores to benchmark columns across models.

Pure Python, numpy and scipy: nothing the package imports uses Django. The one exception is
``leaderboard.harness.services`` (importing files into the database, API tokens), which the package
itself never imports.
"""
from __future__ import annotations

from leaderboard.harness.correlation import (
    STATUS_CONSTANT, STATUS_OK, STATUS_TOO_FEW, Correlation, Interval, correlate, correlate_columns, paired_scores,
    rank_columns,
)
from leaderboard.harness.parser import (
    DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, HarnessFileError, HarnessRow, HarnessRun, file_name_time,
    model_name_from_args, parse_harness_json, parse_harness_version, parse_model_args, read_harness_file,
    redact_model_args, rows_to_json,
)
from leaderboard.harness.presets import (
    AVERAGE_KEY, BBH_CHOICES, FLAG_FALLBACK, FLAG_INCOMPLETE, FLAG_LIMIT, FLAG_MISSING, FLAG_N_SHOT,
    FLAG_N_SHOT_UNKNOWN, FLAGS, MMLU_SUBJECTS, MUSR_CHOICES, OPEN_LLM_V1, OPEN_LLM_V2, PRESETS, Column, ColumnSet,
    ColumnValue, Part, PresetError, PresetResult, Recipe, column_table, custom_column_set, evaluate, get_preset,
    normalise_score, validate_column_set,
)

__all__ = [
    # parser
    "read_harness_file", "parse_harness_json", "rows_to_json", "parse_model_args", "model_name_from_args",
    "parse_harness_version", "file_name_time", "redact_model_args", "HarnessRow", "HarnessRun", "HarnessFileError",
    "DEFAULT_MAX_BYTES", "DEFAULT_MAX_DEPTH",
    # presets
    "OPEN_LLM_V1", "OPEN_LLM_V2", "PRESETS", "get_preset", "custom_column_set", "validate_column_set", "evaluate",
    "normalise_score", "column_table", "ColumnSet", "Column", "Recipe", "Part", "ColumnValue", "PresetResult",
    "PresetError", "AVERAGE_KEY", "FLAGS", "FLAG_N_SHOT", "FLAG_N_SHOT_UNKNOWN", "FLAG_LIMIT", "FLAG_FALLBACK",
    "FLAG_MISSING", "FLAG_INCOMPLETE", "MMLU_SUBJECTS", "BBH_CHOICES", "MUSR_CHOICES",
    # correlation
    "correlate", "correlate_columns", "paired_scores", "rank_columns", "Correlation", "Interval", "STATUS_OK",
    "STATUS_TOO_FEW", "STATUS_CONSTANT",
]
