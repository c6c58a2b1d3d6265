"""Where the peer matrix is: the shared copy beside the checkout, else the bundled one."""

from pathlib import Path

NAME = "deeptime_P_rev_251x251.dat"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "peer-data" / NAME
BUNDLED = Path(__file__).resolve().parent / "data" / f"{NAME}.gz"  # same matrix (tests/data)
PEER = SHARED if SHARED.is_file() else BUNDLED
