"""The ranks of a tiny prior run under torchrun, for tests/test_distributed.py (not a test itself).

`python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py CONFIG ROOT`
trains CONFIG with `percept.training.loop`, as `percept train prior` does, in three sessions: ROOT/split
to 3 steps, ROOT/split resumed to 6, and ROOT/straight to 6 in one go. After each session every rank
writes ROOT/report/<session>-rank<R>.json: its step and the digests of its model and EMA, so that
the test can see every rank holding the same weights, and the resumed run those of the straight one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from percept.core import distributed
from percept.training import loop, runtime
from percept.training.prior import PriorTask, PriorTrainConfig

SESSIONS = (("split-3", "split", 3, False), ("split-6", "split", 6, True), ("straight-6", "straight", 6, False))


def digest(module: torch.nn.Module) -> str:
    return runtime.tensor_digest(sorted(module.state_dict().items()))


def main(config: str, root: str) -> None:
    torch.set_num_threads(1)
    cfg = PriorTrainConfig.from_dict(json.loads(Path(config).read_text()))
    report = Path(root) / "report"
    report.mkdir(parents=True, exist_ok=True)
    for session, folder, steps, resume in SESSIONS:
        run = loop.Run(Path(root) / folder, resume=resume, device="cpu")
        task = PriorTask(cfg, run.device, init_from=None, cooldown=None, run_dir=run.dir)
        result = loop.train(task, run, max_steps=steps, progress=False)
        (report / f"{session}-rank{run.world.rank}.json").write_text(json.dumps({
            "world": run.world.size, "step": result.step, "model": digest(task.model),
            "ema": digest(task.ema), "heldout": result.heldout,
        }))  # fmt: skip
        if run.lock is not None:
            run.lock.close()  # the next session opens the directory again
    distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:3])
