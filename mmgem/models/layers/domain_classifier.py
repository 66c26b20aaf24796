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
#: Values of ``DomainClassifier(input=...)``.
CLASSIFIER_INPUTS = ('memory', 'neck')


@MODELS.register_module()
class DomainClassifier(BaseModule):
    """Small MLP on pooled detector features that predicts the dataset.

    GEM-DINO uses it when the dataset of a test image is unknown: its
    prediction selects the row of the GEM plan that routes the image. Its
    input (``input``) is pooled over the valid (non-padded) tokens of every
    image (:meth:`features`), then ``Linear -> ReLU -> Dropout`` is applied
    ``num_layers - 1`` times before the last ``Linear`` to ``num_datasets``
    logits:

    - ``'memory'`` (default): the mean of the encoder memory, ``embed_dims``
      features;
    - ``'neck'``: the neck's ``num_levels`` feature maps (the encoder's
      input, flattened as DINO's ``pre_transformer`` does), each pooled to its
      mean and standard deviation per channel and concatenated,
      ``2 * num_levels * embed_dims`` features. The per-channel spread
      carries the low-level statistics of a domain (colour, contrast,
      texture: clipart versus photos versus CT slices) that the encoder's
      mean, made for detection, may wash out.

    Args:
        num_datasets (int): Number of datasets (classes of the classifier).
        embed_dims (int): Channels of the pooled tokens. Defaults to 256.
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
        input (str): ``'memory'`` or ``'neck'`` (see above). Defaults to
            ``'memory'``.
        num_levels (int): Feature levels of ``input='neck'``. Defaults to 4.
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
                 input: str = 'memory',
                 num_levels: int = 4,
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_layers < 1:
            raise ValueError(f'num_layers must be >= 1, got {num_layers}')
        check_choice('loss_balance', loss_balance, LOSS_BALANCES)
        check_choice('input', input, CLASSIFIER_INPUTS)
        if input == 'neck' and num_levels < 1:
            raise ValueError(f'num_levels must be >= 1, got {num_levels}')
        self.input = input
        self.num_levels = num_levels
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
        in_dims = embed_dims if input == 'memory' else 2 * num_levels * embed_dims
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

    @staticmethod
    def pool_levels(feats: Tensor, mask: Optional[Tensor],
                    spatial_shapes: Tensor) -> Tensor:
        """Mean and standard deviation of every level over its valid tokens.

        Args:
            feats (Tensor): ``(B, N, C)`` flattened levels, level after level
                (DINO's ``feat_flatten``).
            mask (Tensor, optional): ``(B, N)`` bool, True at padding; None:
                all valid.
            spatial_shapes (Tensor): ``(L, 2)`` ``(h, w)`` of every level.

        Returns:
            Tensor: ``(B, 2 * L * C)``: per level, the ``C`` means then the
            ``C`` standard deviations (population, plus 1e-6 under the root).
        """
        sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
        if sum(sizes) != feats.size(1):
            raise ValueError(f'spatial_shapes {spatial_shapes.tolist()} give {sum(sizes)} '
                             f'tokens, the features have {feats.size(1)}')
        out = []
        masks = [None] * len(sizes) if mask is None else mask.split(sizes, dim=1)
        for level, level_mask in zip(feats.split(sizes, dim=1), masks):
            mean = DomainClassifier.pool(level, level_mask)
            var = DomainClassifier.pool((level - mean[:, None]).square(), level_mask)
            out += [mean, (var + 1e-6).sqrt()]
        return torch.cat(out, dim=1)

    def features(self, tokens: Tensor, mask: Optional[Tensor] = None,
                 spatial_shapes: Optional[Tensor] = None) -> Tensor:
        """The pooled input of the MLP (``input`` says which).

        Args:
            tokens (Tensor): ``(B, N, C)`` encoder memory (``'memory'``) or
                flattened neck levels (``'neck'``).
            mask (Tensor, optional): ``(B, N)`` bool padding mask.
            spatial_shapes (Tensor, optional): ``(L, 2)`` level shapes;
                needed for ``'neck'``.

        Returns:
            Tensor: ``(B, D)`` pooled features (detached with
            ``detach_input``).
        """
        if self.detach_input:
            tokens = tokens.detach()
        if self.input == 'memory':
            return self.pool(tokens, mask)
        if spatial_shapes is None or len(spatial_shapes) != self.num_levels:
            raise ValueError(f"DomainClassifier(input='neck', num_levels={self.num_levels}) "
                             f'needs the spatial_shapes of {self.num_levels} levels, got '
                             f'{None if spatial_shapes is None else spatial_shapes.tolist()}')
        return self.pool_levels(tokens, mask, spatial_shapes)

    def forward(self, tokens: Tensor, mask: Optional[Tensor] = None,
                spatial_shapes: Optional[Tensor] = None) -> Tensor:
        """Dataset logits of every image (arguments of :meth:`features`).

        Returns:
            Tensor: ``(B, num_datasets)`` logits.
        """
        return self.mlp(self.features(tokens, mask, spatial_shapes))

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
