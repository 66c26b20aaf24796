# Copyright (c) mmgem contributors. All rights reserved.
"""Accuracy and confusion matrix of the predicted dataset of each image."""
from typing import Dict, Sequence

import numpy as np


def domain_confusion(num_datasets: int, truth: Sequence[int],
                     guess: Sequence[int]) -> np.ndarray:
    """Count images by (true dataset, predicted dataset).

    Args:
        num_datasets (int): Number of datasets K.
        truth (Sequence[int]): True dataset id of each image.
        guess (Sequence[int]): Predicted dataset id of each image.

    Returns:
        np.ndarray: ``(K, K)`` int64 counts; row = true, column = predicted.
    """
    truth = np.asarray(truth, dtype=np.int64)
    guess = np.asarray(guess, dtype=np.int64)
    if truth.shape != guess.shape:
        raise ValueError(f'domain_confusion: {truth.size} true and {guess.size} '
                         'predicted dataset ids')
    for what, ids in (('true', truth), ('predicted', guess)):
        bad = ids[(ids < 0) | (ids >= num_datasets)]
        if bad.size:
            raise ValueError(f'domain_confusion: {what} dataset id {int(bad[0])} is '
                             f'outside [0, {num_datasets})')
    matrix = np.zeros((num_datasets, num_datasets), dtype=np.int64)
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


def format_domain_confusion(titles: Sequence[str], truth: Sequence[int],
                            guess: Sequence[int]) -> str:
    """Render the domain confusion matrix as a markdown table.

    One row per true dataset (with its image count and accuracy), one column
    per predicted dataset, cells are image counts.

    Args:
        titles (Sequence[str]): Dataset titles, in id order.
        truth (Sequence[int]): True dataset id of each image.
        guess (Sequence[int]): Predicted dataset id of each image.

    Returns:
        str: The markdown table, ending with a newline.
    """
    matrix = domain_confusion(len(titles), truth, guess)
    lines = ['| true \\ predicted | ' + ' | '.join(titles) + ' | images | acc % |',
             '|' + '---|' * (len(titles) + 3)]
    for title, row, hit in zip(titles, matrix, np.diag(matrix)):
        total = int(row.sum())
        acc = f'{100.0 * hit / total:.1f}' if total else '-'
        lines.append(f'| {title} | ' + ' | '.join(str(int(v)) for v in row)
                     + f' | {total} | {acc} |')
    total = int(matrix.sum())
    lines.append('| all | ' + ' | '.join(str(int(v)) for v in matrix.sum(0))
                 + f' | {total} | {100.0 * np.trace(matrix) / total:.1f} |')
    return '\n'.join(lines) + '\n'
