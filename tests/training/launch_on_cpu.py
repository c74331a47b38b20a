"""`harivo` under `accelerate launch` on CPU processes, FSDP included.

Accelerate only turns `distributed_type: FSDP` on for accelerators (a CPU launch becomes plain DDP), while PyTorch's
FSDP2 itself runs on CPU with gloo. This script lifts that one gate, so the FSDP configuration runs here exactly as on
GPUs: Accelerate's own FSDP2 preparation, harivo's checkpoints and resume.
"""

import os
import sys

import accelerate.state
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

_init = accelerate.state.AcceleratorState.__init__


def _fsdp_on_cpu(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    if self.distributed_type == DistributedType.MULTI_CPU and os.environ.get("ACCELERATE_USE_FSDP") == "true":
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = kwargs.get("fsdp_plugin") or FullyShardedDataParallelPlugin()


accelerate.state.AcceleratorState.__init__ = _fsdp_on_cpu

if __name__ == "__main__":
    from harivo.cli import main

    sys.exit(main())
