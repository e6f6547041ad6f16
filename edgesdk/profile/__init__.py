"""Remote profiling and reports: `edgesdk profile`, sweeps, `edgesdk tune`, `edgesdk profile diff`."""

from edgesdk.profile.diff import ProfileDiff, diff
from edgesdk.profile.report import SCHEMA, ProfileReport, load_report, top_layers
from edgesdk.profile.run import LOCAL, ProfileOptions, build_report, profile
from edgesdk.profile.sweep import SweepResult, SweepRow, parse_sweep, sweep, tune

__all__ = ["LOCAL", "SCHEMA", "ProfileDiff", "ProfileOptions", "ProfileReport", "SweepResult", "SweepRow",
           "build_report", "diff", "load_report", "parse_sweep", "profile", "sweep", "top_layers", "tune"]
