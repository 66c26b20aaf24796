# Copyright (c) mmgem contributors. All rights reserved.
"""The ``features`` similarity source: mean-pooled backbone features per dataset."""
from typing import Dict

import numpy as np
import torch
import torch.nn as nn


@torch.no_grad()
def probe_features(model: nn.Module, dataset, num_images: int) -> Dict[str, np.ndarray]:
    """Mean-pooled backbone features of the first images of each dataset.

    The model runs in eval mode without gradients; its training mode is
    restored afterwards.

    Args:
        model (nn.Module): The detector (unwrapped), with
            ``data_preprocessor`` and ``extract_feat``.
        dataset: The UODBDataset.
        num_images (int): Images probed per dataset.

    Returns:
        dict[str, np.ndarray]: Per dataset, the mean over its probe images of
        the global-average-pooled last feature level.
    """
    was_training = model.training
    model.eval()
    sample_ids = np.asarray(dataset.sample_dataset_ids)
    features = {}
    try:
        for d, name in enumerate(dataset.dataset_names):
            vectors = []
            for idx in np.flatnonzero(sample_ids == d)[:num_images]:
                data = model.data_preprocessor(
                    {k: [v] for k, v in dataset[int(idx)].items()}, False)
                feats = model.extract_feat(data['inputs'])
                vectors.append(feats[-1].mean(dim=(2, 3)).flatten().double().cpu())
            features[name] = torch.stack(vectors).mean(0).numpy()
    finally:
        model.train(was_training)
    return features
