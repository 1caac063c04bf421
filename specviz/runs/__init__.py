"""Runs: settings in, prepared runs out (models, heads and datastores from the store), plus the AR
reference every speedup is measured against and the what-if replay. Shared by the CLI, the app and the
benchmarks; tokenisation stays in `specviz.textio`."""
from .baseline import ARTiming, against_ar, ar_decoder, ar_trace, compare_with_ar
from .lattice import Intervenable, LatticeRun, prepare_lattice_run
from .prepare import PreparedRun, prepare_run
from .whatif import what_if

__all__ = ["ARTiming", "Intervenable", "LatticeRun", "ar_decoder", "PreparedRun", "against_ar", "ar_trace",
           "compare_with_ar", "prepare_lattice_run",
           "prepare_run", "what_if"]
