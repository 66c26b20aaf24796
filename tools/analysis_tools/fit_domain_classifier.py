# Copyright (c) mmgem contributors. All rights reserved.
"""Refit GEM-DINO's domain classifier on the frozen features of a checkpoint.

The domain classifier that routes test images of unknown dataset is trained
with the detector, on what the training sampler draws: rare domains are seen
rarely and the classifier learns to favour the large ones. This tool fits it
again after training, the detector frozen:

1. loads ``CHECKPOINT`` safely (mmgem's ``weights_only`` loader) into the
   model of ``CONFIG`` (every weight but the classifier's must load);
2. extracts the classifier's pooled input (``DomainClassifier.features``:
   the encoder memory's mean, or with ``input='neck'`` the neck levels' mean
   and standard deviation) of the training images (the test pipeline on the
   training split, no augmentation), in eval mode under ``torch.no_grad``;
3. re-initialises the classifier's MLP (``--seed``) and fits it alone,
   ``--iters`` AdamW steps of ``--fit-batch`` features drawn uniformly,
   with the loss of ``--loss-balance`` (``balanced_softmax``: the logits of
   Balanced Meta-Softmax; ``inverse_frequency``: class-weighted
   cross-entropy; the domain frequencies are the counts of the extracted
   training images);
4. writes ``--out``: the checkpoint with only the ``domain_classifier.*``
   tensors replaced (every other entry as loaded) and
   ``meta.domain_classifier_fit`` added, atomically (temp file, fsync,
   rename);
5. prints each domain's recall and the balanced accuracy (their mean) on the
   test split, before and after the fit.

A classifier of another shape than the checkpoint's (e.g.
``--cfg-options model.domain_classifier.input=neck``) is fitted from scratch;
test the new checkpoint with the same options. Example::

    python tools/analysis_tools/fit_domain_classifier.py \\
        configs/gem/gem-dino-tiny_r18_mini-uodb-v2.py work_dirs/gem/epoch_12.pth \\
        --out work_dirs/gem/epoch_12_domain-balanced.pth --loss-balance balanced_softmax
"""
import argparse
import copy
import io
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from torch import Tensor

import mmgem  # noqa: F401  (registers mmgem's modules)
from mmgem.engine.runner import load_checkpoint_file
from mmgem.models.layers.domain_classifier import LOSS_BALANCES
from mmgem.utils import atomic_write
from mmgem.utils.choices import check_choice

PREFIX = 'domain_classifier.'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='the new checkpoint')
    parser.add_argument('--loss-balance', default='balanced_softmax', choices=LOSS_BALANCES)
    parser.add_argument('--iters', type=int, default=1000, help='AdamW steps of the fit')
    parser.add_argument('--fit-batch', type=int, default=64, help='features per step')
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--batch-size', type=int, default=4, help='images per forward')
    parser.add_argument('--max-images', type=int, default=None,
                        help='at most this many images of every domain and split')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    return parser.parse_args(argv)


def load_model(cfg: Config, checkpoint: str,
               device: str) -> Tuple[torch.nn.Module, dict, bool]:
    """The config's model with the checkpoint's weights.

    Returns:
        tuple[nn.Module, dict, bool]: The model (eval mode), the checkpoint
        as loaded, and whether the classifier's weights came from it (False:
        another shape, left as built).

    Raises:
        ValueError: If the model has no domain classifier, or a weight other
            than the classifier's is missing or unexpected (names the file).
    """
    from mmdet.registry import MODELS
    model = MODELS.build(copy.deepcopy(cfg.model))
    if getattr(model, 'domain_classifier', None) is None:
        raise ValueError('the config\'s model has no domain_classifier to fit')
    ckpt = load_checkpoint_file(checkpoint, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f'{checkpoint}: no state_dict in the checkpoint')
    own = model.domain_classifier.state_dict()
    old = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    same = set(old) == set(own) and all(old[k].shape == own[k].shape for k in own)
    rest = {k: v for k, v in state.items() if not k.startswith(PREFIX)}
    missing, unexpected = model.load_state_dict(dict(rest, **(
        {PREFIX + k: v for k, v in old.items()} if same else {})), strict=False)
    missing = [k for k in missing if not k.startswith(PREFIX)]
    if missing or unexpected:
        raise ValueError(f'{checkpoint}: state_dict does not fit the model of the config: '
                         f'missing {missing[:5]}, unexpected {list(unexpected)[:5]}')
    return model.to(device).eval(), ckpt, same


def pick_images(dataset, max_images: Optional[int]) -> List[int]:
    """Indices of the first ``max_images`` images of every domain (all: None)."""
    ids = np.asarray(dataset.sample_dataset_ids)
    if max_images is None:
        return list(range(len(ids)))
    return sorted(int(i) for d in np.unique(ids) for i in np.flatnonzero(ids == d)[:max_images])


@torch.no_grad()
def extract_features(model, dataset, indices: Sequence[int],
                     batch_size: int) -> Tuple[Tensor, Tensor]:
    """The classifier's pooled input of the images, and their dataset ids.

    Returns:
        tuple[Tensor, Tensor]: ``(N, D)`` float features and ``(N,)`` int64
        true dataset ids, on the CPU.
    """
    classifier = model.domain_classifier
    feats, labels = [], []
    for start in range(0, len(indices), batch_size):
        data = pseudo_collate([dataset[i] for i in indices[start:start + batch_size]])
        data = model.data_preprocessor(data, False)
        samples = data['data_samples']
        encoder_inputs, _ = model.pre_transformer(model.extract_feat(data['inputs']), samples)
        if classifier.input == 'memory':
            out = model.forward_encoder(**encoder_inputs)
            pooled = classifier.features(out['memory'], out['memory_mask'])
        else:
            pooled = classifier.features(encoder_inputs['feat'], encoder_inputs['feat_mask'],
                                         encoder_inputs['spatial_shapes'])
        feats.append(pooled.float().cpu())
        labels += [int(s.metainfo['dataset_id']) for s in samples]
    return torch.cat(feats), torch.tensor(labels, dtype=torch.long)


def fit_classifier(classifier, feats: Tensor, labels: Tensor, loss_balance: str,
                   iters: int, fit_batch: int = 64, lr: float = 1e-3, seed: int = 0) -> None:
    """Re-initialise the classifier's MLP and fit it on pooled features.

    The domain frequencies of the balanced losses are the counts of
    ``labels``; the classifier keeps them (``class_counts``), its
    ``loss_balance`` becomes ``loss_balance``. Steps draw ``fit_batch``
    features uniformly (as a proportional sampler would), so the balance
    comes from the loss alone.

    Args:
        classifier (DomainClassifier): The classifier (modified in place).
        feats (Tensor): ``(N, D)`` pooled features.
        labels (Tensor): ``(N,)`` dataset ids.
        loss_balance (str): One of ``LOSS_BALANCES``.
        iters (int): AdamW steps.
        fit_batch (int): Features per step.
        lr (float): Learning rate.
        seed (int): Seed of the initialisation and the draws.
    """
    check_choice('loss_balance', loss_balance, LOSS_BALANCES)
    counts = torch.bincount(labels, minlength=classifier.num_datasets)
    classifier.class_counts = counts.double()
    classifier.loss_balance = loss_balance
    device = next(classifier.parameters()).device
    feats, labels = feats.to(device), labels.to(device)
    torch.manual_seed(seed)
    for layer in classifier.mlp:
        if hasattr(layer, 'reset_parameters'):
            layer.reset_parameters()
    optimizer = torch.optim.AdamW(classifier.mlp.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    classifier.train()
    for _ in range(iters):
        idx = torch.randint(0, len(labels), (fit_batch, ), generator=gen).to(device)
        loss = classifier.loss(classifier.mlp(feats[idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    classifier.eval()


@torch.no_grad()
def domain_recalls(classifier, feats: Tensor, labels: Tensor) -> List[float]:
    """Recall of every domain (NaN for a domain without images)."""
    device = next(classifier.parameters()).device
    pred = classifier.mlp(feats.to(device)).argmax(dim=1).cpu()
    return [float((pred[labels == d] == d).float().mean()) if bool((labels == d).any())
            else float('nan') for d in range(classifier.num_datasets)]


def recall_table(names: Sequence[str], counts: Sequence[int],
                 columns: Dict[str, List[float]]) -> str:
    """A markdown table of per-domain recalls and their mean (balanced accuracy)."""
    lines = ['| domain | test images | ' + ' | '.join(columns) + ' |',
             '|---|---|' + '---|' * len(columns)]
    for d, name in enumerate(names):
        lines.append(f'| {name} | {counts[d]} | ' + ' | '.join(
            f'{100 * col[d]:.1f}' for col in columns.values()) + ' |')
    lines.append('| balanced accuracy | | ' + ' | '.join(
        f'{100 * float(np.nanmean(col)):.1f}' for col in columns.values()) + ' |')
    return '\n'.join(lines)


def new_checkpoint(ckpt: dict, classifier, fit: dict) -> dict:
    """The checkpoint with the classifier's tensors replaced, ``fit`` in meta."""
    out = dict(ckpt)
    state = ckpt.get('state_dict', ckpt)
    new_state = {k: v for k, v in state.items() if not k.startswith(PREFIX)}
    new_state.update({PREFIX + k: v.detach().cpu()
                      for k, v in classifier.state_dict().items()})
    if 'state_dict' not in ckpt:
        return new_state
    out['state_dict'] = new_state
    out['meta'] = dict(ckpt.get('meta') or {}, domain_classifier_fit=fit)
    return out


def main(argv: Optional[Sequence[str]] = None) -> str:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    from mmdet.registry import DATASETS
    model, ckpt, from_checkpoint = load_model(cfg, args.checkpoint, args.device)
    classifier = model.domain_classifier
    splits = {}
    for split in ('train', 'test'):
        ds_cfg = copy.deepcopy(cfg[f'{split}_dataloader'].dataset)
        ds_cfg.pipeline = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
        dataset = DATASETS.build(ds_cfg)
        splits[split] = extract_features(model, dataset, pick_images(dataset, args.max_images),
                                         args.batch_size)
    names = list(getattr(dataset, 'dataset_names', None) or
                 [f'dataset{d}' for d in range(classifier.num_datasets)])
    columns = {}
    if from_checkpoint:
        columns['checkpoint recall %'] = domain_recalls(classifier, *splits['test'])
    fit_classifier(classifier, *splits['train'], args.loss_balance, args.iters,
                   args.fit_batch, args.lr, args.seed)
    columns[f'refit ({args.loss_balance}) recall %'] = domain_recalls(classifier,
                                                                       *splits['test'])
    train_counts = torch.bincount(splits['train'][1], minlength=len(names)).tolist()
    test_counts = torch.bincount(splits['test'][1], minlength=len(names)).tolist()
    fit = dict(loss_balance=args.loss_balance, iters=args.iters, lr=args.lr, seed=args.seed,
               train_images=train_counts, source=str(args.checkpoint),
               test_balanced_accuracy=float(np.nanmean(list(columns.values())[-1])))
    buf = io.BytesIO()
    torch.save(new_checkpoint(ckpt, classifier, fit), buf)
    atomic_write(args.out, buf.getvalue())
    text = (f'domain classifier refit on {sum(train_counts)} training images '
            f'({dict(zip(names, train_counts))}), {args.iters} steps, loss {args.loss_balance}\n'
            + recall_table(names, test_counts, columns) + f'\nwritten to {args.out}')
    print(text)
    return text


if __name__ == '__main__':
    main()
