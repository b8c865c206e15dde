"""SAM prompt encoder (segment_anything/modeling/prompt_encoder.py), channels-last.

Prompts come in fixed-size buckets: `points` (B, N, 2) with `labels` (B, N) where label -1 is SAM's
not-a-point token and any label below -1 (PAD_LABEL) marks bucket padding. Padding tokens are
emitted (so shapes stay static) and reported in the returned `sparse_mask`, which the mask
decoder uses as an attention key mask; a masked token then has no effect on any output, so a
padded bucket gives the same result as the unpadded prompt.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from vnsjax.modeling.common import LayerNorm2d, embed, gelu, normal_init, torch_conv

PAD_LABEL = -10


class Buffer(nnx.Variable):
    """A non-trainable tensor that the PyTorch checkpoint stores (register_buffer)."""


class PositionEmbeddingRandom(nnx.Module):
    """Random Fourier features; the Gaussian matrix is loaded from the checkpoint, never redrawn."""

    def __init__(self, num_pos_feats: int = 64, scale: float = 1.0, *, rngs: nnx.Rngs):
        self.positional_encoding_gaussian_matrix = Buffer(normal_init(scale)(rngs.params(), (2, num_pos_feats)))

    def _pe_encoding(self, coords: jax.Array) -> jax.Array:
        coords = 2 * coords - 1
        # Always true float32: a K=2 product feeding sin/cos of phases up to ~20 rad, where TF32/bf16
        # rounding would shift every Fourier feature; it costs nothing.
        g = self.positional_encoding_gaussian_matrix[...].astype(jnp.float32)
        coords = jnp.matmul(coords.astype(jnp.float32), g, precision=jax.lax.Precision.HIGHEST)
        coords = 2 * math.pi * coords
        return jnp.concatenate([jnp.sin(coords), jnp.cos(coords)], axis=-1)

    def __call__(self, size: tuple[int, int]) -> jax.Array:
        """Dense PE of a (h, w) grid: (h, w, 2 * num_pos_feats)."""
        h, w = size
        y = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
        x = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
        grid = jnp.stack(jnp.broadcast_arrays(x[None, :], y[:, None]), axis=-1)
        return self._pe_encoding(grid)

    def forward_with_coords(self, coords: jax.Array, image_size: tuple[int, int]) -> jax.Array:
        coords = coords.astype(jnp.float32)
        coords = coords / jnp.array([image_size[1], image_size[0]], jnp.float32)
        return self._pe_encoding(coords)


class PromptEncoder(nnx.Module):
    def __init__(
        self,
        *,
        embed_dim: int = 256,
        image_embedding_size: tuple[int, int] = (64, 64),
        input_image_size: tuple[int, int] = (1024, 1024),
        mask_in_chans: int = 16,
        rngs: nnx.Rngs,
    ):
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2, rngs=rngs)
        self.point_embeddings = nnx.List([embed(1, embed_dim, rngs=rngs) for _ in range(4)])
        self.not_a_point_embed = embed(1, embed_dim, rngs=rngs)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nnx.Sequential(
            torch_conv(1, mask_in_chans // 4, 2, stride=2, rngs=rngs),
            LayerNorm2d(mask_in_chans // 4, rngs=rngs),
            gelu,
            torch_conv(mask_in_chans // 4, mask_in_chans, 2, stride=2, rngs=rngs),
            LayerNorm2d(mask_in_chans, rngs=rngs),
            gelu,
            torch_conv(mask_in_chans, embed_dim, 1, rngs=rngs),
        )
        self.no_mask_embed = embed(1, embed_dim, rngs=rngs)

    def get_dense_pe(self) -> jax.Array:
        """(1, h, w, C) positional encoding of the image-embedding grid."""
        return self.pe_layer(self.image_embedding_size)[None]

    def _embed_points(self, points: jax.Array, labels: jax.Array) -> jax.Array:
        points = points + 0.5  # shift to the pixel centre
        pe = self.pe_layer.forward_with_coords(points, self.input_image_size)
        lab = labels[..., None]
        emb = lambda e: e.embedding[...].astype(pe.dtype)  # (1, C)
        pe = jnp.where(lab == -1, 0.0, pe)
        pe = pe + jnp.where(lab == -1, emb(self.not_a_point_embed), 0.0)
        pe = pe + jnp.where(lab == 0, emb(self.point_embeddings[0]), 0.0)
        pe = pe + jnp.where(lab == 1, emb(self.point_embeddings[1]), 0.0)
        return pe

    def _embed_boxes(self, boxes: jax.Array) -> jax.Array:
        coords = boxes.reshape(-1, 2, 2) + 0.5
        pe = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        corner = jnp.stack([self.point_embeddings[2].embedding[0], self.point_embeddings[3].embedding[0]]).astype(
            pe.dtype
        )
        return pe + corner

    def __call__(
        self,
        points: tuple[jax.Array, jax.Array] | None,
        boxes: jax.Array | None,
        masks: jax.Array | None,
        *,
        batch_size: int | None = None,
        box_valid: jax.Array | None = None,
        mask_valid: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Embeds prompts.

        points: (coords (B, N, 2), labels (B, N)) in the 1024 frame. As in the original, SAM's own
            not-a-point pad (label -1) is appended only when no box is given; callers that pad
            buckets put PAD_LABEL there instead.
        boxes: (B, 4) xyxy in the 1024 frame; `box_valid` (B,) marks rows that really have a box.
        masks: (B, 256, 256) or (B, 256, 256, 1) low-res logits; `mask_valid` (B,) chooses
            per row between the mask embedding and no_mask_embed.
        Returns sparse (B, T, C), sparse_mask (B, T) bool and dense (B, h, w, C).
        """
        bs = _batch_size(points, boxes, masks, batch_size)
        sparse, valid = [], []
        if points is not None:
            coords, labels = points
            labels = jnp.asarray(labels, jnp.int32)
            if boxes is None:
                coords = jnp.concatenate([coords, jnp.zeros((bs, 1, 2), coords.dtype)], axis=1)
                labels = jnp.concatenate([labels, -jnp.ones((bs, 1), labels.dtype)], axis=1)
            sparse.append(self._embed_points(coords, labels))
            valid.append(labels >= -1)
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
            bv = jnp.ones((bs,), bool) if box_valid is None else box_valid
            valid.append(jnp.repeat(bv[:, None], 2, axis=1))
        if sparse:
            sparse_emb = jnp.concatenate(sparse, axis=1)
            sparse_mask = jnp.concatenate(valid, axis=1)
        else:
            sparse_emb = jnp.zeros((bs, 0, self.embed_dim), jnp.float32)
            sparse_mask = jnp.zeros((bs, 0), bool)

        h, w = self.image_embedding_size
        no_mask = jnp.broadcast_to(self.no_mask_embed.embedding[...].reshape(1, 1, 1, -1), (bs, h, w, self.embed_dim))
        if masks is None:
            dense = no_mask
        else:
            if masks.ndim == 3:
                masks = masks[..., None]
            dense = self.mask_downscaling(masks.astype(jnp.float32))
            if mask_valid is not None:
                dense = jnp.where(mask_valid[:, None, None, None], dense, no_mask)
        return sparse_emb, sparse_mask, dense


def _batch_size(points, boxes, masks, batch_size) -> int:
    if points is not None:
        return points[0].shape[0]
    if boxes is not None:
        return boxes.shape[0]
    if masks is not None:
        return masks.shape[0]
    return 1 if batch_size is None else batch_size
