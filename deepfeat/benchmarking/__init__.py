"""The performance benchmark behind ``deepfeat bench`` (see :mod:`deepfeat.benchmarking.suite`)."""

from deepfeat.extras import require

require("deepfeat.benchmarking")  # one line naming the extra to install, not a traceback

from deepfeat.benchmarking.suite import (
    PARTS,
    TARGETS,
    BenchConfig,
    check_targets,
    format_table,
    run_benchmark,
)

__all__ = ["PARTS", "TARGETS", "BenchConfig", "check_targets", "format_table", "run_benchmark"]
