"""Training checkpoints: one small wrapper over orbax's CheckpointManager, so an API switch (orbax v1) stays local.

WORKDIR/checkpoints/<step>/
  state/  trainable parameters, BatchNorm statistics, optimizer state, step, RNG (orbax StandardSave)
  data/   the grain iterator state of every process (grain.checkpoint handler, one file per process)
The frozen SAM base is not saved: it is rebuilt from `sam_checkpoint` (or the seed) on resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


class TrainCheckpoints:
    def __init__(self, directory: str | Path, *, keep: int = 3, save_every_steps: int = 0):
        # Synchronous saves: the train step donates its buffers, and the state is small (METI + NSFM only).
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=True)
        self._every = save_every_steps
        self._mngr = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler()},
        )

    @property
    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def should_save(self, step: int, last_step: int) -> bool:
        return step == last_step or (self._every > 0 and step % self._every == 0)

    def save(self, step: int, state: Any, data_iterator: Any) -> None:
        self._mngr.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator)
            ),
            force=True,
        )

    def restore(self, step: int, abstract_state: Any, data_iterator: Any) -> Any:
        """Restores into `abstract_state`'s structure, dtypes and shardings; sets `data_iterator`'s state in place."""
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), abstract_state
        )
        out = self._mngr.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), data=grain.checkpoint.CheckpointRestore(data_iterator)
            ),
        )
        return out["state"]

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()
