"""`python -m gamerec_assets.train_launcher TORCHRUN_ARGS...`: torchrun that dies with its parent.

The `two_tower_checkpoint` asset starts training jobs of TRAIN_NPROC > 1 processes through
this module rather than `torch.distributed.run` directly: it first asks the kernel to kill it
when the run that started it dies (see `core.processes`), then runs torchrun's own `main` in
this process. Its workers (`train_worker`) ask the same of it, so a run killed with SIGKILL
leaves no launcher and no worker behind.
"""

import os
import sys
from collections.abc import Sequence

from gamerec_assets.core.processes import children_die_with_me, die_with_parent


def main(argv: Sequence[str] | None = None) -> None:
    die_with_parent()
    os.environ.update(children_die_with_me())  # the workers' parent is this process
    from torch.distributed.run import main as torchrun

    torchrun(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
