"""Make the Fashion-MNIST subset that ships in spnkit/data/embedded (run once, deterministic).

    python scripts/make_embedded_subset.py [/usr/share/datasets/fashion-mnist]
"""

import sys
from pathlib import Path

from spnkit.data.idx import read_idx, write_idx

SIZES = {"train": 6000, "t10k": 1000}
OUT = Path(__file__).parents[1] / "spnkit" / "data" / "embedded"

source = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist")
for split, count in SIZES.items():
    for kind, dims in (("images", "idx3"), ("labels", "idx1")):
        name = f"{split}-{kind}-{dims}-ubyte.gz"
        write_idx(OUT / name, read_idx(source / name)[:count])
        print(f"wrote {OUT / name}: first {count} {kind}")
