# Copyright (c) mmgem contributors. All rights reserved.
"""Domain classifier: which dataset does an image come from?"""
from typing import Optional

import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.utils import OptConfigType
from mmengine.model import BaseModule
from torch import Tensor, nn


@MODELS.register_module()
class DomainClassifier(BaseModule):
    """Small MLP on mean-pooled encoder memory that predicts the dataset.

    GEM-DINO uses it when the dataset of a test image is unknown: its
    prediction selects the row of the GEM plan that routes the image. The
    encoder memory is averaged over the valid (non-padded) tokens of every
    image, then ``Linear -> ReLU -> Dropout`` is applied ``num_layers - 1``
    times before the last ``Linear`` to ``num_datasets`` logits.

    Args:
        num_datasets (int): Number of datasets (classes of the classifier).
        embed_dims (int): Dimension of the encoder memory. Defaults to 256.
        hidden_dims (int): Hidden width. Defaults to 256.
        num_layers (int): Linear layers (>= 1). Defaults to 2.
        dropout (float): Dropout after each hidden layer. Defaults to 0.
        detach_input (bool): Stop the classifier's gradient at the encoder
            memory, so the detector's features are not shaped by it.
            Defaults to False (trained jointly with the encoder).
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 num_datasets: int,
                 embed_dims: int = 256,
                 hidden_dims: int = 256,
                 num_layers: int = 2,
                 dropout: float = 0.,
                 detach_input: bool = False,
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_layers < 1:
            raise ValueError(f'num_layers must be >= 1, got {num_layers}')
        self.num_datasets = num_datasets
        self.detach_input = detach_input
        layers = []
        in_dims = embed_dims
        for _ in range(num_layers - 1):
            layers += [
                nn.Linear(in_dims, hidden_dims),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout)
            ]
            in_dims = hidden_dims
        layers.append(nn.Linear(in_dims, num_datasets))
        self.mlp = nn.Sequential(*layers)

    @staticmethod
    def pool(memory: Tensor, memory_mask: Optional[Tensor]) -> Tensor:
        """Mean of the encoder memory over each image's valid tokens.

        Args:
            memory (Tensor): ``(B, N, C)`` encoder output.
            memory_mask (Tensor, optional): ``(B, N)`` bool, True at padded
                positions (mmdet's ``key_padding_mask`` convention). None
                means all tokens are valid.

        Returns:
            Tensor: ``(B, C)`` pooled features.
        """
        if memory_mask is None:
            return memory.mean(dim=1)
        valid = (~memory_mask).to(memory.dtype).unsqueeze(-1)
        return (memory * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1)

    def forward(self, memory: Tensor,
                memory_mask: Optional[Tensor] = None) -> Tensor:
        """Dataset logits of every image.

        Args:
            memory (Tensor): ``(B, N, C)`` encoder output.
            memory_mask (Tensor, optional): ``(B, N)`` bool padding mask.

        Returns:
            Tensor: ``(B, num_datasets)`` logits.
        """
        if self.detach_input:
            memory = memory.detach()
        return self.mlp(self.pool(memory, memory_mask))

    def loss(self, logits: Tensor, dataset_ids: Tensor) -> Tensor:
        """Cross-entropy of the logits to the true dataset ids.

        Args:
            logits (Tensor): ``(B, num_datasets)`` logits.
            dataset_ids (Tensor): ``(B,)`` true dataset ids.

        Returns:
            Tensor: Scalar mean cross-entropy (unweighted).
        """
        return F.cross_entropy(logits, dataset_ids.to(logits.device).long())
