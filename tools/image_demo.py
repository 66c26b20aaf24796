# Copyright (c) mmgem contributors. All rights reserved.
"""Detect objects in images with a GEM checkpoint, like mmdet's ``demo/image_demo.py``.

The dataset of the images is either unknown (the dataset-unknown protocol:
detections are labelled in the model's unified label space by class name,
``person`` for every dataset's person; GEM's domain classifier only picks the
plan row that routes the image) or given with ``--dataset`` (labels of that
dataset's classes)::

    python tools/image_demo.py img.jpg configs/gem/gem-dino-tiny_r18_mini-uodb.py \\
        --weights work_dirs/demo_gem/iter_600.pth --out-dir outputs
    python tools/image_demo.py imgs/ configs/gem/gem-dino-tiny_r18_mini-uodb.py \\
        --weights iter_600.pth --dataset natural --out-dir outputs

Drawn images go to ``<out-dir>/vis/`` (``vis/<dataset>/`` with
``--dataset``), predictions to ``<out-dir>/preds/`` (with
``dataset_name``, ``label_space`` and ``label_names``) unless
``--no-save-pred``. A model without class names (no ``dataset_classes`` in
its config) labels images of unknown dataset in the concatenated space
(``'<dataset>/<class>'``), with a warning. For each image it prints how many
boxes reach ``--pred-score-thr`` (those are drawn) and the highest-scoring
boxes whatever their score, so that a model whose scores stay low (a short
training run such as ``make demo``'s) shows what it found and which threshold
would draw it.
"""
import argparse
import warnings
from typing import List, Sequence

from mmengine.config import Config, DictAction

from mmgem.apis import GEMDetInferencer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='GEM-DINO image demo')
    parser.add_argument('inputs', help='image file, folder of images, or URL')
    parser.add_argument('model', help='config file')
    parser.add_argument('--weights', default=None, help='checkpoint file')
    parser.add_argument('--dataset', default=None,
                        help='dataset of the images (a name of the model\'s datasets); '
                        'default: unknown, labels in the unified space by class name')
    parser.add_argument('--out-dir', default='outputs', help='output folder')
    parser.add_argument('--device', default=None, help='device, e.g. cpu or cuda:0')
    parser.add_argument('--pred-score-thr', type=float, default=0.3,
                        help='score threshold of drawn boxes')
    parser.add_argument('--batch-size', type=int, default=1, help='inference batch size')
    parser.add_argument('--show', action='store_true', help='show each image in a window')
    parser.add_argument('--no-save-vis', action='store_true', help='do not save drawn images')
    parser.add_argument('--no-save-pred', action='store_true', help='do not save predictions')
    parser.add_argument('--print-result', action='store_true', help='print the predictions')
    parser.add_argument('--palette', default='none',
                        choices=['coco', 'voc', 'citys', 'random', 'none'],
                        help='box colours (none: the config\'s, else random)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='config overrides, e.g. model.plan_file=gem_plan.json')
    return parser.parse_args()


def describe(predictions: Sequence[dict], score_thr: float, top: int = 3) -> List[str]:
    """One line per image: the boxes at or above the threshold, and the best ones.

    Args:
        predictions (Sequence[dict]): The inferencer's ``predictions`` (dicts
            with ``scores``, ``bboxes`` and ``label_names`` or ``labels``,
            and ``dataset_name``).
        score_thr (float): The drawing threshold.
        top (int): How many of the highest-scoring boxes to list. Defaults to 3.

    Returns:
        list[str]: ``image <i> (<dataset>): <n> boxes >= <thr> drawn; highest:
        <label> <score> [x1 y1 x2 y2], ...``.
    """
    lines = []
    for i, pred in enumerate(predictions):
        scores = list(pred.get('scores', []))
        names = pred.get('label_names') or [str(label) for label in pred.get('labels', [])]
        order = sorted(range(len(scores)), key=lambda j: -scores[j])[:top]
        boxes = [' '.join(f'{v:.0f}' for v in pred['bboxes'][j]) for j in order]
        best = ', '.join(f'{names[j]} {scores[j]:.3f} [{box}]' for j, box in zip(order, boxes))
        drawn = sum(score >= score_thr for score in scores)
        lines.append(f'image {i} ({pred.get("dataset_name") or "dataset unknown"}): {drawn} boxes '
                     f'>= {score_thr} drawn; highest: {best or "none"}')
        if not drawn and scores:
            lines[-1] += f' (lower --pred-score-thr below {scores[order[0]]:.3f} to draw them)'
    return lines


def main() -> None:
    args = parse_args()
    model = args.model
    if args.cfg_options:
        model = Config.fromfile(args.model)
        model.merge_from_dict(args.cfg_options)
    inferencer = GEMDetInferencer(model, args.weights, dataset=args.dataset,
                                  device=args.device, palette=args.palette)
    if args.dataset is None and len(inferencer.dataset_names) > 1 and getattr(
            inferencer.model, 'unified_label_space', None) is None:
        warnings.warn('image_demo: the dataset of the images is unknown and the model has no '
                      'class names (dataset_classes) to unify its label space; labels are '
                      "'<dataset>/<class>' of the concatenated space, of any dataset")
    results = inferencer(args.inputs, batch_size=args.batch_size, out_dir=args.out_dir,
                         show=args.show, pred_score_thr=args.pred_score_thr,
                         no_save_vis=args.no_save_vis, no_save_pred=args.no_save_pred,
                         print_result=args.print_result)
    print('\n'.join(describe(results['predictions'], args.pred_score_thr)))
    if args.out_dir and not (args.no_save_vis and args.no_save_pred):
        print(f'results written to {args.out_dir}')


if __name__ == '__main__':
    main()
