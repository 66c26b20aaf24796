# Copyright (c) mmgem contributors. All rights reserved.
"""Accuracy and confusion matrix of the predicted dataset of each image."""
from typing import Dict, Optional, Sequence

import numpy as np


def domain_confusion(num_datasets: int, truth: Sequence[int],
                     guess: Sequence[int], num_predicted: Optional[int] = None) -> np.ndarray:
    """Count images by (true dataset, predicted dataset).

    Args:
        num_datasets (int): Number of (true) datasets K.
        truth (Sequence[int]): True dataset id of each image.
        guess (Sequence[int]): Predicted dataset id of each image.
        num_predicted (int, optional): Number of datasets a prediction may
            name, when they are not the true ones (unseen domains: the
            model's training datasets). None: ``num_datasets``.

    Returns:
        np.ndarray: ``(K, num_predicted)`` int64 counts; row = true, column =
        predicted.
    """
    num_predicted = num_datasets if num_predicted is None else num_predicted
    truth = np.asarray(truth, dtype=np.int64)
    guess = np.asarray(guess, dtype=np.int64)
    if truth.shape != guess.shape:
        raise ValueError(f'domain_confusion: {truth.size} true and {guess.size} '
                         'predicted dataset ids')
    for what, ids, n in (('true', truth, num_datasets), ('predicted', guess, num_predicted)):
        bad = ids[(ids < 0) | (ids >= n)]
        if bad.size:
            raise ValueError(f'domain_confusion: {what} dataset id {int(bad[0])} is '
                             f'outside [0, {n})')
    matrix = np.zeros((num_datasets, num_predicted), dtype=np.int64)
    np.add.at(matrix, (truth, guess), 1)
    return matrix


def domain_accuracy(names: Sequence[str], truth: Sequence[int],
                    guess: Sequence[int]) -> Dict[str, float]:
    """Domain accuracy over all images and per true dataset, in percent.

    Percent, as mmdet logs classification accuracy (``acc``) and as
    ``GEMDINO`` logs ``domain_acc`` in training.

    Args:
        names (Sequence[str]): Dataset names, in id order.
        truth (Sequence[int]): True dataset id of each image.
        guess (Sequence[int]): Predicted dataset id of each image.

    Returns:
        dict[str, float]: ``domain_acc``, ``domain_balanced_acc`` (the
        mean of the per-dataset accuracies, so a rare dataset weighs as
        much as a large one) and ``<name>_domain_acc`` for every dataset
        with at least one image, rounded to 2 decimals.
    """
    matrix = domain_confusion(len(names), truth, guess)
    results = {'domain_acc': round(100.0 * np.trace(matrix) / matrix.sum(), 2)}
    seen = matrix.sum(1) > 0
    results['domain_balanced_acc'] = round(
        100.0 * float(np.mean(np.diag(matrix)[seen] / matrix.sum(1)[seen])), 2)
    for d, name in enumerate(names):
        if matrix[d].sum():
            results[f'{name}_domain_acc'] = round(100.0 * matrix[d, d] / matrix[d].sum(), 2)
    return results


def domain_routing_shares(names: Sequence[str], predicted_names: Sequence[str],
                          truth: Sequence[int], guess: Sequence[int]) -> Dict[str, float]:
    """Where the images of unseen datasets are routed, in percent.

    Args:
        names (Sequence[str]): The (unseen) true datasets, in id order.
        predicted_names (Sequence[str]): The datasets a prediction names
            (the model's), in id order.
        truth (Sequence[int]): True dataset id of each image (in ``names``).
        guess (Sequence[int]): Predicted dataset id (in ``predicted_names``).

    Returns:
        dict[str, float]: ``<name>_routed_<predicted name>``: the share of
        ``name``'s images predicted as that dataset, for every pair with at
        least one image, rounded to 2 decimals.
    """
    matrix = domain_confusion(len(names), truth, guess, len(predicted_names))
    results = {}
    for d, name in enumerate(names):
        total = matrix[d].sum()
        for p in np.flatnonzero(matrix[d]):
            results[f'{name}_routed_{predicted_names[p]}'] = round(
                100.0 * matrix[d, p] / total, 2)
    return results


def format_domain_confusion(titles: Sequence[str], truth: Sequence[int],
                            guess: Sequence[int],
                            predicted_titles: Optional[Sequence[str]] = None) -> str:
    """Render the domain confusion matrix as a markdown table.

    One row per true dataset (with its image count and accuracy), one column
    per predicted dataset, cells are image counts.

    Args:
        titles (Sequence[str]): Dataset titles, in id order.
        truth (Sequence[int]): True dataset id of each image.
        guess (Sequence[int]): Predicted dataset id of each image.
        predicted_titles (Sequence[str], optional): Titles of the columns
            when the predictable datasets are not the true ones (unseen
            domains); there is then no accuracy (``-``). None: ``titles``.

    Returns:
        str: The markdown table, ending with a newline.
    """
    square = predicted_titles is None
    columns = titles if square else predicted_titles
    matrix = domain_confusion(len(titles), truth, guess, len(columns))
    hits = np.diag(matrix) if square else [None] * len(titles)
    lines = ['| true \\ predicted | ' + ' | '.join(columns) + ' | images | acc % |',
             '|' + '---|' * (len(columns) + 3)]
    for title, row, hit in zip(titles, matrix, hits):
        total = int(row.sum())
        acc = f'{100.0 * hit / total:.1f}' if total and hit is not None else '-'
        lines.append(f'| {title} | ' + ' | '.join(str(int(v)) for v in row)
                     + f' | {total} | {acc} |')
    total = int(matrix.sum())
    acc = f'{100.0 * np.trace(matrix) / total:.1f}' if square else '-'
    lines.append('| all | ' + ' | '.join(str(int(v)) for v in matrix.sum(0))
                 + f' | {total} | {acc} |')
    return '\n'.join(lines) + '\n'
