"""PyTorch reference of VNS-SAM's released decoder (`VNS_SAM_Decoder`, VNS-Train/models/vns_sam.py) for parity tests.

Built on the official segment_anything modules (MaskDecoder, TwoWayTransformer, Attention, MLP, LayerNorm2d) and
on vns_neck.py; re-implemented (not copied) from the released behaviour (docs/released-code.md#meti-tokens).
Attribute names and shapes equal the released checkpoint keys (tests/fixtures/state-dict-keys.tsv, vns_decoder_vit_*).

The forward mirrors the release, including its per-image Python loop, the token off-by-one, the double GELU and
the batched `@` that only works for one prompt per image. The SAM weights are not loaded from a hard-coded path
(the release does); tests randomise every tensor instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.mask_decoder import MLP, MaskDecoder
from segment_anything.modeling.transformer import Attention, TwoWayTransformer
from torch import nn

from tests.torch_ref import vns_neck


class MultiStageTwoWayTransformer(TwoWayTransformer):
    """segment_anything_training's TwoWayTransformer with multi_stage=True (depth 2).

    After every layer but the last, an extra token->image attention + LayerNorm gives intermediate tokens; the
    main path continues from the unmodified queries. Returns ([interm tokens, final tokens], [layer-0 keys,
    final keys]) as the release does (its attention maps are dropped: they are only used for visualisation).
    """

    def __init__(self, depth: int = 2, embedding_dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048):
        super().__init__(depth=depth, embedding_dim=embedding_dim, num_heads=num_heads, mlp_dim=mlp_dim)
        self.internal_attn_token_to_image = Attention(embedding_dim, num_heads, downsample_rate=2)
        self.norm_internal_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding, image_pe, point_embedding):
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        stage_queries, stage_keys = [], []
        for i, layer in enumerate(self.layers):
            queries, keys = layer(queries=queries, keys=keys, query_pe=point_embedding, key_pe=key_pe)
            if i < self.depth - 1:
                attn = self.internal_attn_token_to_image(q=queries + point_embedding, k=keys + key_pe, v=keys)
                stage_queries.append(self.norm_internal_attn(queries + attn))
                stage_keys.append(keys)
        attn = self.final_attn_token_to_image(q=queries + point_embedding, k=keys + key_pe, v=keys)
        stage_queries.append(self.norm_final_attn(queries + attn))
        stage_keys.append(keys)
        return stage_queries, stage_keys


class VnsSamDecoder(MaskDecoder):
    def __init__(self, vit_dim: int = 1024):
        super().__init__(
            transformer_dim=256,
            transformer=MultiStageTwoWayTransformer(),
            num_multimask_outputs=3,
            activation=nn.GELU,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        )
        d = 256
        self.hf_token = nn.Embedding(2, d)
        self.hf_mlp = MLP(d, d, d // 8, 3)
        self.edge_mlp = MLP(d, d, d // 8, 3)
        self.num_mask_tokens = self.num_mask_tokens + 2  # 6: the release slices outputs 1..5 with it
        self.neck = vns_neck.TFD(in_channels=[vit_dim] * 4)
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(d // 8, d // 4, 3, 1, 1),
            LayerNorm2d(d // 4),
            nn.GELU(),
            nn.Conv2d(d // 4, d // 8, 3, 1, 1),
            nn.GELU(),
        )
        self.embedding_edgefeature = nn.Sequential(
            nn.ConvTranspose2d(d, d // 4, kernel_size=2, stride=2),
            LayerNorm2d(d // 4),
            nn.GELU(),
            nn.ConvTranspose2d(d // 4, d // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.dense_pred_head = nn.Sequential(nn.Conv2d(d, d, 3, 1, 1), nn.GELU(), nn.Conv2d(d, 1, 1, 1))
        self.fusion_layer = nn.Sequential(
            nn.Conv2d(2, 256, 3, 1, 1), nn.GELU(), nn.Conv2d(256, 256, 3, 1, 1), nn.GELU(), nn.Conv2d(256, 1, 3, 1, 1)
        )

    def forward(
        self,
        image_embeddings,
        image_pe,
        sparse_prompt_embeddings,
        dense_prompt_embeddings,
        multimask_output,
        interm_embeddings,
    ) -> dict[str, torch.Tensor]:
        """As released with hq_token_only=False. image_pe / sparse / dense are per-image lists (MyTrain.py)."""
        mask_feature, edge_feature = self.neck(interm_embeddings)
        per_image = [
            self.predict_masks(
                image_embeddings[i].unsqueeze(0),
                image_pe[i],
                sparse_prompt_embeddings[i],
                dense_prompt_embeddings[i],
                mask_feature[i].unsqueeze(0),
                edge_feature[i].unsqueeze(0),
            )
            for i in range(len(image_embeddings))
        ]
        masks, inter_masks, fusion, iou_pred, dense_map = (torch.cat(t, 0) for t in zip(*per_image, strict=True))
        if multimask_output:
            sl = slice(1, self.num_mask_tokens - 1)  # 1:5 of 4 IoU entries -> 1..3
            iou_best, idx = torch.max(iou_pred[:, sl], dim=1)
            masks_sam = masks[:, sl][torch.arange(masks.size(0)), idx].unsqueeze(1)
            iou_out = iou_best.unsqueeze(1)
        else:
            masks_sam = masks[:, 0:1]
            iou_out = iou_pred[:, 0:1]
        n = self.num_mask_tokens
        return {
            "sam_masks": masks_sam,
            "iou_predictions": iou_out,
            "vns_mask": masks[:, n - 2 : n - 1],
            "edge": masks[:, n - 1 : n],  # logits; the release returns torch.sigmoid of it
            "interm_mask": inter_masks[:, 0:1],
            "interm_edge": inter_masks[:, 1:2],
            "fused_mask": fusion[:, 0:1],
            "dense_map": dense_map,
        }

    def predict_masks(self, image_embeddings, image_pe, sparse, dense, hq_feature, edge_feat):
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight, self.hf_token.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
        tokens = torch.cat((output_tokens, sparse), dim=1)
        src = torch.repeat_interleave(image_embeddings, tokens.shape[0], dim=0) + dense
        pos_src = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
        b, c, h, w = src.shape

        stage_hs, stage_src = self.transformer(src, pos_src, tokens)
        internal_hs, hs = stage_hs
        internal_src, src = stage_src
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : self.num_mask_tokens, :]  # outputs 1..5: one short, as released
        inter_mask_tokens_out = internal_hs[:, 1 : self.num_mask_tokens, :]

        src = src.transpose(1, 2).view(b, c, h, w)
        dense_pred = self.dense_pred_head(src)
        internal_src = internal_src.transpose(1, 2).view(b, c, h, w)

        upscaled_sam = self.output_upscaling(src)
        upscaled_ours = self.embedding_maskfeature[-1](upscaled_sam) + hq_feature
        upscaled_inter = self.embedding_maskfeature(self.output_upscaling(internal_src)) + hq_feature
        upscaled_edge = self.embedding_edgefeature(edge_feat)
        upscaled_inter_edge = self.embedding_edgefeature(edge_feat)

        hyper_in = torch.stack([self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(4)], dim=1)
        edge_token = self.edge_mlp(mask_tokens_out[:, -1, :])
        mask_token = self.hf_mlp(mask_tokens_out[:, -2, :] + mask_tokens_out[:, -1, :])
        inter_edge_token = self.edge_mlp(inter_mask_tokens_out[:, -1, :])
        inter_mask_token = self.hf_mlp(inter_mask_tokens_out[:, -2, :] + inter_mask_tokens_out[:, -1, :])

        b, c, h, w = upscaled_sam.shape
        masks_sam = (hyper_in @ upscaled_sam.view(b, c, h * w)).view(b, -1, h, w)
        # (b, 32) @ (b, 32, hw) broadcasts to (b, b, hw): only meaningful for b == 1, as released.
        masks_ours = (mask_token @ upscaled_ours.view(b, c, h * w)).view(b, -1, h, w)
        edge_pred = (edge_token @ upscaled_edge.view(b, c, h * w)).view(b, -1, h, w)
        inter_masks_ours = (inter_mask_token @ upscaled_inter.view(b, c, h * w)).view(b, -1, h, w)
        inter_edge = (inter_edge_token @ upscaled_inter_edge.view(b, c, h * w)).view(b, -1, h, w)

        masks = torch.cat([masks_sam, masks_ours, edge_pred], dim=1)
        inter_masks = torch.cat([inter_masks_ours, inter_edge], dim=1)
        iou_pred = self.iou_prediction_head(iou_token_out)

        dense_up = F.interpolate(dense_pred, size=masks_ours.shape[2:], mode="bilinear", align_corners=False)
        fusion = self.fusion_layer(torch.cat((masks_ours, dense_up), dim=1))
        return masks, inter_masks, fusion, iou_pred, dense_pred
