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

The core is importable: :func:`refit_domain_classifier` (a config object,
no command line; the returned dict holds the recalls and timings), which the
benchmark row ``gem_refit_unknown`` of ``tools/benchmark/mini_uodb_table.py``
calls on its trained checkpoint.

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
import time
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
#: :func:`refit_domain_classifier`'s fit options and their defaults (the CLI's)
FIT_DEFAULTS = dict(loss_balance='balanced_softmax', iters=1000, fit_batch=64, lr=1e-3,
                    batch_size=4, max_images=None, seed=0)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line's options (defaults: :data:`FIT_DEFAULTS`).

    Args:
        argv (Sequence[str], optional): The arguments (None: ``sys.argv``).

    Returns:
        argparse.Namespace: The options.
    """
    d = FIT_DEFAULTS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='the new checkpoint')
    parser.add_argument('--loss-balance', default=d['loss_balance'], choices=LOSS_BALANCES)
    parser.add_argument('--iters', type=int, default=d['iters'], help='AdamW steps of the fit')
    parser.add_argument('--fit-batch', type=int, default=d['fit_batch'],
                        help='features per step')
    parser.add_argument('--lr', type=float, default=d['lr'])
    parser.add_argument('--batch-size', type=int, default=d['batch_size'],
                        help='images per forward')
    parser.add_argument('--max-images', type=int, default=d['max_images'],
                        help='at most this many images of every domain and split')
    parser.add_argument('--seed', type=int, default=d['seed'])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    return parser.parse_args(argv)


def load_model(cfg: Config, checkpoint: str,
               device: str) -> Tuple[torch.nn.Module, dict, bool]:
    """The config's model with the checkpoint's weights.

    Args:
        cfg (Config): The config (its ``model``).
        checkpoint (str): The checkpoint file (mmgem's safe loader).
        device (str): Where the model goes.

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
    """Indices of the first ``max_images`` images of every domain.

    Args:
        dataset (UODBDataset): The split (its ``sample_dataset_ids``).
        max_images (int, optional): Images per domain (None: all).

    Returns:
        list[int]: Sorted sample indices.
    """
    ids = np.asarray(dataset.sample_dataset_ids)
    if max_images is None:
        return list(range(len(ids)))
    return sorted(int(i) for d in np.unique(ids) for i in np.flatnonzero(ids == d)[:max_images])


@torch.no_grad()
def extract_features(model, dataset, indices: Sequence[int],
                     batch_size: int) -> Tuple[Tensor, Tensor]:
    """The classifier's pooled input of the images, and their dataset ids.

    Args:
        model (nn.Module): GEM-DINO (or any DINO with a domain classifier),
            eval mode.
        dataset (UODBDataset): The split, with the test pipeline.
        indices (Sequence[int]): The samples.
        batch_size (int): Images per forward.

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
    """Recall of every domain's top-1 prediction.

    Args:
        classifier (DomainClassifier): The classifier.
        feats (Tensor): ``(N, D)`` pooled features.
        labels (Tensor): ``(N,)`` true dataset ids.

    Returns:
        list[float]: One recall per domain (NaN for a domain without images).
    """
    device = next(classifier.parameters()).device
    pred = classifier.mlp(feats.to(device)).argmax(dim=1).cpu()
    return [float((pred[labels == d] == d).float().mean()) if bool((labels == d).any())
            else float('nan') for d in range(classifier.num_datasets)]


def recall_table(names: Sequence[str], counts: Sequence[int],
                 columns: Dict[str, List[float]]) -> str:
    """A markdown table of per-domain recalls and their mean (balanced accuracy).

    Args:
        names (Sequence[str]): The domains.
        counts (Sequence[int]): Their images.
        columns (dict): Column title -> per-domain recalls.

    Returns:
        str: The table.
    """
    lines = ['| domain | test images | ' + ' | '.join(columns) + ' |',
             '|---|---|' + '---|' * len(columns)]
    for d, name in enumerate(names):
        lines.append(f'| {name} | {counts[d]} | ' + ' | '.join(
            f'{100 * col[d]:.1f}' for col in columns.values()) + ' |')
    lines.append('| balanced accuracy | | ' + ' | '.join(
        f'{100 * float(np.nanmean(col)):.1f}' for col in columns.values()) + ' |')
    return '\n'.join(lines)


def new_checkpoint(ckpt: dict, classifier, fit: dict) -> dict:
    """The checkpoint with the classifier's tensors replaced, ``fit`` in meta.

    Args:
        ckpt (dict): The checkpoint as loaded (or a bare state dict).
        classifier (DomainClassifier): The refitted classifier.
        fit (dict): The record for ``meta.domain_classifier_fit``.

    Returns:
        dict: The new checkpoint (every other entry as in ``ckpt``).
    """
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


def refit_domain_classifier(cfg: Config, checkpoint: str, out: str,
                            loss_balance: str = FIT_DEFAULTS['loss_balance'],
                            iters: int = FIT_DEFAULTS['iters'],
                            fit_batch: int = FIT_DEFAULTS['fit_batch'],
                            lr: float = FIT_DEFAULTS['lr'],
                            batch_size: int = FIT_DEFAULTS['batch_size'],
                            max_images: Optional[int] = FIT_DEFAULTS['max_images'],
                            seed: int = FIT_DEFAULTS['seed'], device: str = 'cpu',
                            test_split: bool = True) -> dict:
    """Refit the classifier of ``checkpoint`` on frozen features; write ``out``.

    Steps 1-4 of the module's description: load, extract the pooled
    features of the training images (and, with ``test_split``, of the test
    images), fit the re-initialised MLP alone, write the checkpoint with
    only the ``domain_classifier.*`` tensors replaced, atomically.

    Args:
        cfg (Config): The model's config (its ``train_dataloader`` and
            ``test_dataloader`` datasets give the images; the test pipeline
            is used for both).
        checkpoint (str): The trained checkpoint (safe load).
        out (str): The new checkpoint.
        loss_balance (str): One of ``LOSS_BALANCES`` (see
            :func:`fit_classifier`). Defaults to ``'balanced_softmax'``.
        iters (int): AdamW steps. Defaults to 1000.
        fit_batch (int): Features per step. Defaults to 64.
        lr (float): Learning rate. Defaults to 1e-3.
        batch_size (int): Images per forward of the extraction. Defaults to 4.
        max_images (int, optional): At most this many images of every domain
            and split (None: all). Defaults to None.
        seed (int): Seed of the initialisation and the draws. Defaults to 0.
        device (str): Where the model runs. Defaults to ``'cpu'``.
        test_split (bool): Also extract the test images and report recalls
            on them. Defaults to True.

    Returns:
        dict: ``names`` (the domains), ``fit`` (the record written to the
        checkpoint's ``meta.domain_classifier_fit``), ``images`` (split ->
        images per domain), ``recall`` (split -> ``{'checkpoint': [...]``
        (absent when the classifier was fitted from scratch) ``, 'refit':
        [...]}``, per-domain recalls, NaN for a domain without images),
        ``balanced_accuracy`` (split -> the same keys, the means of the
        recalls), ``from_checkpoint`` (whether the classifier's weights came
        from the checkpoint), ``extract_s`` and ``fit_s`` (wall seconds of
        the feature extraction and of the fit) and ``out``.

    Raises:
        ValueError: See :func:`load_model`.
    """
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    from mmdet.registry import DATASETS
    model, ckpt, from_checkpoint = load_model(cfg, checkpoint, device)
    classifier = model.domain_classifier
    start = time.perf_counter()
    splits = {}
    for split in ('train', 'test') if test_split else ('train', ):
        ds_cfg = copy.deepcopy(cfg[f'{split}_dataloader'].dataset)
        ds_cfg.pipeline = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
        dataset = DATASETS.build(ds_cfg)
        splits[split] = extract_features(model, dataset, pick_images(dataset, max_images),
                                         batch_size)
    extract_s = time.perf_counter() - start
    names = list(getattr(dataset, 'dataset_names', None) or
                 [f'dataset{d}' for d in range(classifier.num_datasets)])
    recall: Dict[str, Dict[str, List[float]]] = {split: {} for split in splits}
    if from_checkpoint:
        for split, data in splits.items():
            recall[split]['checkpoint'] = domain_recalls(classifier, *data)
    start = time.perf_counter()
    fit_classifier(classifier, *splits['train'], loss_balance, iters, fit_batch, lr, seed)
    fit_s = time.perf_counter() - start
    for split, data in splits.items():
        recall[split]['refit'] = domain_recalls(classifier, *data)
    images = {split: torch.bincount(data[1], minlength=len(names)).tolist()
              for split, data in splits.items()}
    balanced = {split: {k: float(np.nanmean(v)) for k, v in by.items()}
                for split, by in recall.items()}
    fit = dict(loss_balance=loss_balance, iters=iters, lr=lr, seed=seed,
               train_images=images['train'], source=str(checkpoint),
               train_balanced_accuracy=balanced['train']['refit'])
    if test_split:
        fit['test_balanced_accuracy'] = balanced['test']['refit']
    buf = io.BytesIO()
    torch.save(new_checkpoint(ckpt, classifier, fit), buf)
    atomic_write(out, buf.getvalue())
    return dict(names=names, fit=fit, images=images, recall=recall,
                balanced_accuracy=balanced, from_checkpoint=from_checkpoint,
                extract_s=extract_s, fit_s=fit_s, out=str(out))


def main(argv: Optional[Sequence[str]] = None) -> str:
    """The command line: refit, write ``--out``, print the test split's recalls.

    Args:
        argv (Sequence[str], optional): The arguments (None: ``sys.argv``).

    Returns:
        str: The printed report.
    """
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    result = refit_domain_classifier(
        cfg, args.checkpoint, args.out, loss_balance=args.loss_balance, iters=args.iters,
        fit_batch=args.fit_batch, lr=args.lr, batch_size=args.batch_size,
        max_images=args.max_images, seed=args.seed, device=args.device)
    names, test = result['names'], result['recall']['test']
    columns = {}
    if 'checkpoint' in test:
        columns['checkpoint recall %'] = test['checkpoint']
    columns[f'refit ({args.loss_balance}) recall %'] = test['refit']
    train_counts = result['images']['train']
    text = (f'domain classifier refit on {sum(train_counts)} training images '
            f'({dict(zip(names, train_counts))}), {args.iters} steps, loss {args.loss_balance}\n'
            + recall_table(names, result['images']['test'], columns)
            + f'\nwritten to {args.out}')
    print(text)
    return text


if __name__ == '__main__':
    main()
