"""The training step's pieces: prompts from a data_pipeline batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vnsjax.modeling.prompt_encoder import PAD_LABEL
from vnsjax.modeling.sam import Prompts


def training_prompts(batch: dict[str, jax.Array], mask_size: tuple[int, int] = (256, 256)) -> Prompts:
    """One prompt per image from a data_pipeline training batch, chosen by `prompt_type` (0 box, 1 points, 2 mask).

    Point prompts get SAM's not-a-point token (no box goes with them), as in the released training.
    """
    t = batch["prompt_type"]
    b = t.shape[0]
    use_points = (t == 1)[:, None]
    labels = jnp.where(use_points, batch["point_labels"], PAD_LABEL)
    labels = jnp.concatenate([labels, jnp.where(use_points, -1, PAD_LABEL)], axis=1)
    coords = jnp.concatenate([batch["points"], jnp.zeros((b, 1, 2), batch["points"].dtype)], axis=1)
    masks = batch["mask_input"].astype(jnp.float32)
    if masks.shape[1:] != mask_size:
        masks = jax.image.resize(masks, (b, *mask_size), method="linear", antialias=False)
    return Prompts(coords, labels.astype(jnp.int32), batch["box"], t == 0, masks, t == 2)
