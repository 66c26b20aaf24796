# Copyright (c) mmgem contributors. All rights reserved.
"""DINO's decoder with MoE FFNs in chosen layers."""
from typing import List, Optional, Sequence

from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention
from mmcv.ops import MultiScaleDeformableAttention
from mmdet.models.layers import DeformableDetrTransformerDecoderLayer, DinoTransformerDecoder
from mmdet.models.layers.transformer.utils import MLP
from mmdet.registry import MODELS
from mmdet.utils import OptConfigType
from mmengine.model import ModuleList
from torch import Tensor, nn

from .batch_routing import BatchRouting


class GEMDinoDecoderLayer(DeformableDetrTransformerDecoderLayer):
    """Deformable-DETR decoder layer whose FFN may be an :class:`MoEFFN`.

    It takes the routing of the batch (a
    :class:`~mmgem.models.layers.BatchRouting`) as the keyword argument
    ``routing`` and hands it to its FFN when that is an MoE FFN; the
    attention modules never see it. Without ``moe_cfg`` the layer is exactly
    mmdet's (same modules, same state-dict keys).

    Args:
        moe_cfg (dict, optional): Config of the MoE FFN, built through the
            registry on top of the layer's ``ffn_cfg`` (``type`` defaults to
            ``'MoEFFN'``; e.g. ``num_experts``, ``routing``), so a config can
            swap the implementation. None keeps the dense FFN. Defaults to
            None.
        *args, **kwargs: Those of ``DeformableDetrTransformerDecoderLayer``.
    """

    def __init__(self, *args, moe_cfg: OptConfigType = None,
                 **kwargs) -> None:
        self.moe_cfg = moe_cfg
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        """Initialize self_attn, cross-attn, the (MoE) FFN and norms."""
        self.self_attn = MultiheadAttention(**self.self_attn_cfg)
        self.cross_attn = MultiScaleDeformableAttention(**self.cross_attn_cfg)
        self.embed_dims = self.self_attn.embed_dims
        if self.moe_cfg is None:
            self.ffn = FFN(**self.ffn_cfg)
        else:
            cfg = dict(type='MoEFFN')
            cfg.update(self.ffn_cfg)
            cfg.update(self.moe_cfg)
            self.ffn = MODELS.build(cfg)
        self.norms = ModuleList([
            build_norm_layer(self.norm_cfg, self.embed_dims)[1]
            for _ in range(3)
        ])

    @property
    def is_moe(self) -> bool:
        """bool: Whether the FFN of this layer is an MoE FFN."""
        return self.moe_cfg is not None

    def forward(self,
                query: Tensor,
                key: Tensor = None,
                value: Tensor = None,
                query_pos: Tensor = None,
                key_pos: Tensor = None,
                self_attn_mask: Tensor = None,
                cross_attn_mask: Tensor = None,
                key_padding_mask: Tensor = None,
                routing: Optional[BatchRouting] = None,
                **kwargs) -> Tensor:
        """Forward function.

        Args:
            query (Tensor): ``(bs, num_queries, dim)`` queries.
            key, value, query_pos, key_pos, self_attn_mask, cross_attn_mask,
                key_padding_mask: As in mmdet's
                ``DetrTransformerDecoderLayer.forward``.
            routing (BatchRouting, optional): The batch's routing, for the
                MoE FFN.

        Returns:
            Tensor: ``(bs, num_queries, dim)`` output queries.
        """
        query = self.self_attn(
            query=query,
            key=query,
            value=query,
            query_pos=query_pos,
            key_pos=query_pos,
            attn_mask=self_attn_mask,
            **kwargs)
        query = self.norms[0](query)
        query = self.cross_attn(
            query=query,
            key=key,
            value=value,
            query_pos=query_pos,
            key_pos=key_pos,
            attn_mask=cross_attn_mask,
            key_padding_mask=key_padding_mask,
            **kwargs)
        query = self.norms[1](query)
        if self.is_moe:
            query = self.ffn(query, routing=routing)
        else:
            query = self.ffn(query)
        query = self.norms[2](query)
        return query


class GEMDinoTransformerDecoder(DinoTransformerDecoder):
    """DINO's transformer decoder with :class:`MoEFFN` in chosen layers.

    The forward is DINO's: its ``**kwargs`` (here ``routing``, computed once
    per forward by the detector) reach every layer, and the MoE layers use
    it.

    Args:
        moe_layers (Sequence[int]): Indices of the decoder layers whose FFN
            becomes an MoE FFN. Defaults to ``(0, 2, 4)``.
        moe_cfg (dict, optional): Config of the MoE FFN (see
            :class:`GEMDinoDecoderLayer`) on top of ``layer_cfg.ffn_cfg``.
            None (or no ``moe_layers``) gives mmdet's dense decoder.
            Defaults to None.
        *args, **kwargs: Those of ``DinoTransformerDecoder`` (``num_layers``,
            ``layer_cfg``, ``post_norm_cfg``, ``return_intermediate``).
    """

    def __init__(self,
                 *args,
                 moe_layers: Sequence[int] = (0, 2, 4),
                 moe_cfg: OptConfigType = None,
                 **kwargs) -> None:
        self.moe_layers = tuple(int(i) for i in moe_layers)
        self.moe_cfg = moe_cfg
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        """Initialize decoder layers, the reference-point head and norm."""
        bad = [i for i in self.moe_layers if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(
                f'moe_layers {list(self.moe_layers)} name layer(s) {bad} '
                f'outside the {self.num_layers} decoder layers')
        self.layers = ModuleList([
            GEMDinoDecoderLayer(
                **self.layer_cfg,
                moe_cfg=self.moe_cfg if i in self.moe_layers else None)
            for i in range(self.num_layers)
        ])
        self.embed_dims = self.layers[0].embed_dims
        if self.post_norm_cfg is not None:
            raise ValueError('There is not post_norm in '
                             f'{self._get_name()}')
        self.ref_point_head = MLP(self.embed_dims * 2, self.embed_dims,
                                  self.embed_dims, 2)
        self.norm = nn.LayerNorm(self.embed_dims)

    def moe_ffns(self) -> List[nn.Module]:
        """list[MoEFFN]: The MoE FFNs, in layer order."""
        return [layer.ffn for layer in self.layers if layer.is_moe]
