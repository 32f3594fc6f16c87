"""netemu."""

import os

# One BLAS thread: netemu's arrays are per-link vectors, too small for threaded BLAS,
# and BLAS threads would take CPU from the shaping engine on a small machine; and
# OpenBLAS retries a failed allocation forever in a thread's set-up, where a memory
# limit (ulimit -v) would hang the run. A user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("netemu")
except PackageNotFoundError:  # run from a checkout that is not installed
    __version__ = "0.0.0+unknown"
