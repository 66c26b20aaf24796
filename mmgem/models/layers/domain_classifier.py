# Copyright (c) mmgem contributors. All rights reserved.
"""Domain classifier: which dataset does an image come from?"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.utils import OptConfigType
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmgem.utils.choices import check_choice

#: Values of ``DomainClassifier(loss_balance=...)``.
LOSS_BALANCES = ('none', 'inverse_frequency', 'balanced_softmax')


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
        loss_balance (str): How :meth:`loss` treats rare domains:
            ``'none'`` (plain cross-entropy; a proportional sampler makes
            the classifier favour the large domains), ``'inverse_frequency'``
            (cross-entropy weighted by ``1 / (K * p_d)``, so every domain
            weighs alike) or ``'balanced_softmax'`` (cross-entropy of
            ``logits + log p_d``, Ren et al., "Balanced Meta-Softmax",
            NeurIPS 2020: the logits then estimate the balanced posterior;
            predictions use the logits alone). ``p_d`` is the domain
            frequency with add-one smoothing, from ``class_counts`` or
            counted over the training targets seen so far (buffer
            ``seen_counts``, saved in checkpoints; under DDP the buffers of
            rank 0 are broadcast, so these are rank 0's counts). Defaults to
            ``'none'``.
        class_counts (Sequence[int], optional): Images of every domain (e.g.
            the training images per dataset per epoch) for ``p_d``; None
            counts the targets seen. Defaults to None.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 num_datasets: int,
                 embed_dims: int = 256,
                 hidden_dims: int = 256,
                 num_layers: int = 2,
                 dropout: float = 0.,
                 detach_input: bool = False,
                 loss_balance: str = 'none',
                 class_counts: Optional[Sequence[int]] = None,
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_layers < 1:
            raise ValueError(f'num_layers must be >= 1, got {num_layers}')
        check_choice('loss_balance', loss_balance, LOSS_BALANCES)
        self.loss_balance = loss_balance
        self.class_counts = None
        if class_counts is not None:
            self.class_counts = torch.as_tensor(list(class_counts), dtype=torch.float64)
            if self.class_counts.shape != (num_datasets, ) or bool((self.class_counts < 0).any()):
                raise ValueError(f'class_counts must be {num_datasets} counts >= 0, '
                                 f'got {list(class_counts)}')
        if loss_balance != 'none' and class_counts is None:
            self.register_buffer('seen_counts', torch.zeros(num_datasets, dtype=torch.long))
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
        """Cross-entropy of the logits to the true dataset ids, balanced as
        ``loss_balance`` says.

        In training without ``class_counts``, the targets are first added to
        ``seen_counts``.

        Args:
            logits (Tensor): ``(B, num_datasets)`` logits.
            dataset_ids (Tensor): ``(B,)`` true dataset ids.

        Returns:
            Tensor: Scalar cross-entropy (unweighted by the loss weight; for
            ``'inverse_frequency'`` the weighted mean of PyTorch's
            ``cross_entropy``).
        """
        target = dataset_ids.to(logits.device).long()
        if self.loss_balance == 'none':
            return F.cross_entropy(logits, target)
        freq = self.domain_frequency(target).to(logits)
        if self.loss_balance == 'inverse_frequency':
            return F.cross_entropy(logits, target, weight=1 / (len(freq) * freq))
        return F.cross_entropy(logits + freq.log(), target)

    def domain_frequency(self, target: Optional[Tensor] = None) -> Tensor:
        """Smoothed domain frequency ``p_d = (n_d + 1) / sum(n + 1)``.

        Args:
            target (Tensor, optional): Training targets to count first (only
                in training and without ``class_counts``).

        Returns:
            Tensor: ``(num_datasets,)`` float64 frequencies.
        """
        if self.class_counts is not None:
            counts = self.class_counts
        else:
            if target is not None and self.training:
                self.seen_counts += torch.bincount(
                    target, minlength=len(self.seen_counts)).to(self.seen_counts)
            counts = self.seen_counts.double()
        counts = counts.double() + 1
        return counts / counts.sum()
