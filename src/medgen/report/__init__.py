"""The self-contained HTML report of a run."""
from medgen.report.html import write_report

__all__ = ["write_report"]
