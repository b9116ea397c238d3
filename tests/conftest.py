import os

import torch

os.environ.setdefault("SPNKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
# the tests run many tiny ops: one thread avoids oversubscription on small, busy machines
torch.set_num_threads(1)
