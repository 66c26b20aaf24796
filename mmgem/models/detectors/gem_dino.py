# Copyright (c) mmgem contributors. All rights reserved.
"""GEM-DINO: DINO with plan-routed mixture-of-experts decoder FFNs."""
import re
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmdet.models.detectors import DINO
from mmdet.models.layers import DeformableDetrTransformerEncoder, SinePositionalEncoding
from mmdet.registry import MODELS
from mmdet.structures import OptSampleList, SampleList
from mmdet.utils import OptConfigType
from mmengine.logging import MMLogger
from mmengine.runner.checkpoint import _load_checkpoint, load_state_dict
from torch import Tensor, nn

from mmgem.planner import GEMPlan

from ..layers.gem_dino_decoder import GEMDinoTransformerDecoder
from ..layers.moe_ffn import ROUTING_MODES, MoEFFN
from .routing_info import dataset_ids_from_samples, image_buckets_from_samples

PLAN_HASH_BYTES = 64
_FFN_KEY = re.compile(r'^decoder\.layers\.(\d+)\.ffn\.(layers\..+)$')


@MODELS.register_module()
class GEMDINO(DINO):
    """DINO whose chosen decoder FFNs are mixture-of-experts FFNs.

    The FFNs of decoder layers ``moe_layers`` become :class:`MoEFFN` with
    ``num_experts`` experts of the dense FFN's shape. ``routing`` selects
    the method (all share this code):

    - ``'gem'``: every image goes to the expert the GEM plan maps it to
      (dataset id + stable image hash); no router, no auxiliary loss.
    - ``'damex'``: learned top-1 token router trained with the
      cross-entropy to the plan's expert (``loss_damex_ce``).
    - ``'moe'``: learned noisy top-1 router with the importance + load loss
      (``loss_moe_aux``).

    The plan lives in buffers of fixed shape (``plan_quota`` of every MoE
    layer, ``num_datasets x num_experts``; ``label_offsets``; ``plan_hash``),
    so checkpoints carry it and ``load_state_dict`` restores it.
    :class:`GEMPlannerHook` computes it and calls :meth:`install_plan`.

    The label space is the concatenation of the datasets' label sets:
    dataset ``d`` owns labels ``[label_offsets[d], label_offsets[d + 1])``.
    At test time the dataset of an image is either read from its metainfo
    (``test_dataset_known=True``, UODB's per-dataset protocol) or predicted
    by the domain classifier (``test_dataset_known=False``); the image is
    routed through the plan with that dataset and, with
    ``restrict_test_labels``, its class scores outside the dataset's range
    are set to ``-inf`` before the head's post-processing (and any box left
    with such a label is dropped).

    Args:
        num_experts (int): Experts per MoE layer. Defaults to 8.
        num_datasets (int): Datasets of the label space and the plan.
            Defaults to 1.
        moe_layers (Sequence[int]): Decoder layers with an MoE FFN.
            Defaults to ``(0, 2, 4)``.
        routing (str): ``'gem'``, ``'damex'`` or ``'moe'``. Defaults to
            ``'gem'``.
        aux_loss_weight (float): Weight of the routers' auxiliary losses
            (summed over MoE layers). Defaults to 0.1.
        capacity_factor (float): Expert capacity factor of the token-routed
            modes. Defaults to 1.25.
        eval_capacity_factor (float, optional): Capacity factor of the
            token-routed modes at test time; None uses ``capacity_factor``.
            Defaults to None.
        gate_noise (float, optional): Router noise scale (see
            :class:`MoEFFN`); None uses the mode's default. Defaults to None.
        upcycle_from (str, optional): Path (or URL) of a dense DINO
            checkpoint with the same architecture. At :meth:`init_weights`
            all its weights are loaded and the dense FFN of every MoE layer
            is copied into each of its experts (sparse upcycling); keys whose
            shapes differ (e.g. a head with another number of classes) are
            skipped with a warning. ``load_from`` / ``resume`` still apply
            afterwards. Defaults to None.
        domain_classifier (dict, optional): Config of a
            :class:`DomainClassifier` (``num_datasets`` and ``embed_dims``
            are filled in) on mean-pooled encoder memory; trained jointly
            with loss ``loss_domain``. Needed for
            ``test_dataset_known=False`` with ``routing='gem'``. Defaults to
            None.
        domain_loss_weight (float): Weight of ``loss_domain``. Defaults to
            0.1.
        test_dataset_known (bool): Whether the dataset of a test image is
            read from its metainfo (True) or predicted (False). Defaults to
            True.
        restrict_test_labels (bool): Whether test predictions are restricted
            to the (known or predicted) dataset's label range. Defaults to
            True.
        label_offsets (Sequence[int], optional): ``num_datasets + 1``
            cumulative label offsets (``UODBDataset.label_offsets``). None
            gives ``[0, num_classes]`` for one dataset and "unset" (zeros,
            to be installed by the hook) otherwise. Defaults to None.
        plan_file (str, optional): A plan JSON (``work_dir/gem_plan.json``
            of a training run, or ``tools/analysis_tools/gem_plan.py``'s
            output) installed when the model is built (:meth:`install_plan_file`),
            so a model built without a training run routes: mmdet's
            ``get_flops.py``, ``DetInferencer`` without weights, ``test.py``
            on a config without ``GEMPlannerHook``. A checkpoint loaded later
            replaces it with its own plan buffers. For training, give the
            file to ``GEMPlannerHook(plan_file=...)`` instead (the hook
            refuses a model that already holds a plan it did not install).
            Defaults to None.
        *args, **kwargs: Those of mmdet's ``DINO``.
    """

    def __init__(self,
                 *args,
                 num_experts: int = 8,
                 num_datasets: int = 1,
                 moe_layers: Sequence[int] = (0, 2, 4),
                 routing: str = 'gem',
                 aux_loss_weight: float = 0.1,
                 capacity_factor: float = 1.25,
                 eval_capacity_factor: Optional[float] = None,
                 gate_noise: Optional[float] = None,
                 upcycle_from: Optional[str] = None,
                 domain_classifier: OptConfigType = None,
                 domain_loss_weight: float = 0.1,
                 test_dataset_known: bool = True,
                 restrict_test_labels: bool = True,
                 label_offsets: Optional[Sequence[int]] = None,
                 plan_file: Optional[str] = None,
                 **kwargs) -> None:
        if routing not in ROUTING_MODES:
            raise ValueError(f'routing must be one of {ROUTING_MODES}, got '
                             f'{routing!r}')
        self.num_experts = num_experts
        self.num_datasets = num_datasets
        self.moe_layers = tuple(int(i) for i in moe_layers)
        self.routing = routing
        self.aux_loss_weight = aux_loss_weight
        self.capacity_factor = capacity_factor
        self.eval_capacity_factor = eval_capacity_factor
        self.gate_noise = gate_noise
        super().__init__(*args, **kwargs)
        self.upcycle_from = upcycle_from
        self.domain_loss_weight = domain_loss_weight
        self.test_dataset_known = test_dataset_known
        self.restrict_test_labels = restrict_test_labels
        if domain_classifier is not None:
            cfg = dict(type='DomainClassifier')
            cfg.update(domain_classifier)
            cfg.update(num_datasets=num_datasets, embed_dims=self.embed_dims)
            self.domain_classifier = MODELS.build(cfg)
        else:
            self.domain_classifier = None
        if (not test_dataset_known and routing == 'gem'
                and self.domain_classifier is None):
            raise ValueError(
                'test_dataset_known=False with routing="gem" needs a '
                'domain_classifier to predict the dataset that routes each '
                'test image')
        num_classes = self.bbox_head.num_classes
        self.register_buffer(
            'label_offsets',
            torch.zeros(num_datasets + 1, dtype=torch.long))
        if label_offsets is not None:
            self.set_label_offsets(label_offsets)
        elif num_datasets == 1:
            self.set_label_offsets([0, num_classes])
        self.register_buffer(
            'plan_hash', torch.zeros(PLAN_HASH_BYTES, dtype=torch.uint8))
        self.plan_file = plan_file
        if plan_file is not None:
            self.install_plan_file(plan_file)

    def _init_layers(self) -> None:
        """Initialize layers except for backbone, neck and bbox_head.

        As DINO's, with :class:`GEMDinoTransformerDecoder` as decoder.
        """
        self.positional_encoding = SinePositionalEncoding(
            **self.positional_encoding)
        self.encoder = DeformableDetrTransformerEncoder(**self.encoder)
        moe_cfg = dict(
            num_experts=self.num_experts,
            num_datasets=self.num_datasets,
            routing=self.routing,
            capacity_factor=self.capacity_factor,
            eval_capacity_factor=self.eval_capacity_factor,
            gate_noise=self.gate_noise,
            aux_loss_weight=self.aux_loss_weight)
        self.decoder = GEMDinoTransformerDecoder(
            **self.decoder, moe_layers=self.moe_layers, moe_cfg=moe_cfg)
        self.embed_dims = self.encoder.embed_dims
        self.query_embedding = nn.Embedding(self.num_queries, self.embed_dims)
        num_feats = self.positional_encoding.num_feats
        assert num_feats * 2 == self.embed_dims, \
            f'embed_dims should be exactly 2 times of num_feats. ' \
            f'Found {self.embed_dims} and {num_feats}.'
        self.level_embed = nn.Parameter(
            torch.Tensor(self.num_feature_levels, self.embed_dims))
        self.memory_trans_fc = nn.Linear(self.embed_dims, self.embed_dims)
        self.memory_trans_norm = nn.LayerNorm(self.embed_dims)

    def init_weights(self) -> None:
        """Initialize weights as DINO does, experts per slice, then upcycle.

        DINO's init applies ``xavier_uniform_`` to every decoder parameter of
        more than one dimension, which on the batched ``(M, out, in)``
        expert tensors would use wrong fans; every expert is therefore
        re-initialised with xavier on its own ``(out, in)`` slice, as the
        dense FFN's linear layers are.
        """
        super().init_weights()
        for ffn in self.moe_ffns():
            ffn.xavier_init_experts()
        if self.upcycle_from is not None:
            self.upcycle_from_checkpoint(self.upcycle_from)

    # ------------------------------------------------------------------
    # plan and label space
    # ------------------------------------------------------------------
    def moe_ffns(self) -> List[MoEFFN]:
        """list[MoEFFN]: The MoE FFNs of the decoder, in layer order."""
        return self.decoder.moe_ffns()

    def set_label_offsets(self, label_offsets: Sequence[int]) -> None:
        """Set the per-dataset label offsets.

        Args:
            label_offsets (Sequence[int]): ``num_datasets + 1`` cumulative
                offsets from 0 to the head's ``num_classes``.
        """
        offsets = np.asarray(label_offsets, dtype=np.int64).reshape(-1)
        num_classes = self.bbox_head.num_classes
        if (offsets.size != self.num_datasets + 1 or offsets[0] != 0
                or offsets[-1] != num_classes
                or np.any(np.diff(offsets) < 0)):
            raise ValueError(
                f'label_offsets {offsets.tolist()} must be {self.num_datasets}'
                f' + 1 non-decreasing offsets from 0 to the head\'s '
                f'num_classes={num_classes}')
        self.label_offsets.copy_(torch.from_numpy(offsets))

    def has_label_offsets(self) -> bool:
        """bool: Whether label offsets are set (not all zeros)."""
        return int(self.label_offsets[-1]) > 0

    def install_plan(self,
                     quota: np.ndarray,
                     label_offsets: Optional[np.ndarray] = None,
                     plan_hash: str = '') -> None:
        """Install a GEM plan into every MoE layer.

        Args:
            quota (np.ndarray): ``(num_datasets, num_experts)`` integer quota
                table (images of each dataset per epoch for each expert).
            label_offsets (np.ndarray, optional): ``num_datasets + 1`` label
                offsets; None keeps the current ones.
            plan_hash (str): The plan's hash (at most 64 ASCII characters),
                returned by :meth:`installed_plan_hash`.
        """
        quota = np.asarray(quota)
        if quota.shape != (self.num_datasets, self.num_experts):
            raise ValueError(
                f'plan quota has shape {quota.shape}, the model has '
                f'num_datasets={self.num_datasets} and '
                f'num_experts={self.num_experts}')
        if not np.issubdtype(quota.dtype, np.integer):
            if not np.array_equal(quota, np.round(quota)):
                raise ValueError(f'plan quota must be integers, got {quota}')
        encoded = plan_hash.encode('ascii')
        if len(encoded) > PLAN_HASH_BYTES:
            raise ValueError(f'plan hash {plan_hash!r} is longer than '
                             f'{PLAN_HASH_BYTES} characters')
        if label_offsets is not None:
            self.set_label_offsets(label_offsets)
        quota_t = torch.from_numpy(quota.astype(np.int64))
        for ffn in self.moe_ffns():
            ffn.install_plan(quota_t)
        padded = encoded.ljust(PLAN_HASH_BYTES, b'\0')
        self.plan_hash.copy_(
            torch.tensor(list(padded), dtype=torch.uint8))

    def install_plan_file(self, plan_file: str) -> GEMPlan:
        """Install the plan of a plan JSON (:meth:`GEMPlan.save`'s format).

        Args:
            plan_file (str): Path of the JSON.

        Returns:
            GEMPlan: The installed plan.
        """
        plan = GEMPlan.load(plan_file)
        want = (self.num_datasets, self.num_experts)
        if tuple(plan.quota.shape) != want:
            raise ValueError(
                f'GEMDINO: plan_file {plan_file} holds a plan for {plan.quota.shape[0]} '
                f'datasets {list(plan.dataset_names)} x {plan.quota.shape[1]} experts, but '
                f'the model has num_datasets={want[0]} and num_experts={want[1]}')
        self.install_plan(plan.quota, plan_hash=plan.hash)
        return plan

    def has_plan(self) -> bool:
        """bool: Whether every MoE layer holds a (non-zero) plan."""
        ffns = self.moe_ffns()
        return bool(ffns) and all(ffn.has_plan() for ffn in ffns)

    def installed_plan_hash(self) -> str:
        """str: Hash of the installed plan, ``''`` when none was given."""
        return bytes(self.plan_hash.tolist()).rstrip(b'\0').decode('ascii')

    def installed_plan_quota(self) -> np.ndarray:
        """np.ndarray: The installed ``(num_datasets, num_experts)`` quota."""
        return self.moe_ffns()[0].plan_quota.cpu().numpy().copy()

    # ------------------------------------------------------------------
    # upcycling
    # ------------------------------------------------------------------
    def upcycle_state_dict(self, dense_state_dict: Dict[str, Tensor]
                           ) -> Dict[str, Tensor]:
        """Convert a dense DINO state dict to this model's keys.

        The FFN weights of every MoE layer are copied into each expert;
        GEM-only entries (plan buffers, routers, domain classifier) missing
        from the dense state dict keep this model's current values.

        Args:
            dense_state_dict (dict[str, Tensor]): State dict of mmdet's DINO
                (or of a GEM-DINO: MoE keys pass through unchanged).

        Returns:
            dict[str, Tensor]: A state dict for this model.
        """
        converted: Dict[str, Tensor] = {}
        dense_ffns: Dict[int, Dict[str, Tensor]] = defaultdict(dict)
        for key, value in dense_state_dict.items():
            match = _FFN_KEY.match(key)
            if match and int(match.group(1)) in self.moe_layers:
                dense_ffns[int(match.group(1))][match.group(2)] = value
            else:
                converted[key] = value
        for layer_id, ffn_state in dense_ffns.items():
            moe = self.decoder.layers[layer_id].ffn
            prefix = f'decoder.layers.{layer_id}.ffn.'
            with torch.no_grad():
                scratch = MoEFFN(
                    moe.embed_dims,
                    moe.feedforward_channels,
                    num_experts=moe.num_experts,
                    num_datasets=1)
                scratch.upcycle_from_ffn(ffn_state)
            for name in ('w1', 'b1', 'w2', 'b2'):
                converted[prefix + name] = getattr(scratch, name).data
        own = self.state_dict()
        gem_only = ('plan_quota', 'router.', 'label_offsets', 'plan_hash',
                    'domain_classifier.')
        for key, value in own.items():
            if key not in converted and any(
                    part in key for part in gem_only):
                converted[key] = value
        return converted

    def load_dense_state_dict(self,
                              dense_state_dict: Dict[str, Tensor],
                              strict: bool = False) -> None:
        """Load a dense DINO state dict, upcycling the MoE layers' FFNs.

        Args:
            dense_state_dict (dict[str, Tensor]): State dict of mmdet's DINO.
            strict (bool): Raise on missing/unexpected/mismatched keys
                instead of logging them. Defaults to False.
        """
        load_state_dict(
            self,
            self.upcycle_state_dict(dense_state_dict),
            strict=strict,
            logger=MMLogger.get_current_instance())

    def upcycle_from_checkpoint(self, filename: str) -> None:
        """Load a dense DINO checkpoint file with :meth:`load_dense_state_dict`.

        Args:
            filename (str): Checkpoint path or URL (``state_dict`` inside or
                a bare state dict).
        """
        checkpoint = _load_checkpoint(filename, map_location='cpu')
        state_dict = checkpoint.get('state_dict', checkpoint)
        state_dict = {
            (k[len('module.'):] if k.startswith('module.') else k): v
            for k, v in state_dict.items()
        }
        MMLogger.get_current_instance().info(
            f'GEMDINO: upcycling {len(self.moe_ffns())} MoE layer(s) from '
            f'dense checkpoint {filename}')
        self.load_dense_state_dict(state_dict, strict=False)

    # ------------------------------------------------------------------
    # routing
    # ------------------------------------------------------------------
    def _routing(self, memory: Tensor, memory_mask: Optional[Tensor],
                 batch_data_samples: OptSampleList) -> Dict:
        """Dataset ids, image buckets and domain logits of the batch.

        Ids and buckets read from the metainfo stay on the CPU: the MoE
        layers group images on the host, so no device sync is needed.
        """
        domain_logits = None
        if self.domain_classifier is not None:
            domain_logits = self.domain_classifier(memory, memory_mask)
        known_ids = None
        if batch_data_samples is not None and (
                self.training or self.test_dataset_known):
            known_ids = dataset_ids_from_samples(batch_data_samples,
                                                 self.num_datasets)
        if self.training or self.test_dataset_known:
            dataset_ids = known_ids
        elif domain_logits is not None:
            dataset_ids = domain_logits.argmax(dim=1)
        else:
            dataset_ids = None
        needs_plan_route = self.routing == 'gem' or (self.routing == 'damex'
                                                     and self.training)
        image_buckets = None
        if needs_plan_route:
            if batch_data_samples is None or dataset_ids is None:
                raise ValueError(
                    f'GEMDINO(routing={self.routing!r}) needs the batch data '
                    'samples (dataset_id, dataset_name, img_id) to route')
            image_buckets = image_buckets_from_samples(batch_data_samples)
        return dict(
            dataset_ids=dataset_ids,
            image_buckets=image_buckets,
            known_dataset_ids=known_ids,
            domain_logits=domain_logits)

    def forward_transformer(self,
                            img_feats: Tuple[Tensor],
                            batch_data_samples: OptSampleList = None
                            ) -> Dict:
        """DINO's transformer forward, with routing to the MoE layers.

        The per-image routing information is computed after the encoder
        (the domain classifier reads its memory) and passed through
        ``forward_decoder``'s kwargs to the MoE decoder layers. The returned
        dict carries it under ``'routing'``, which :meth:`loss`,
        :meth:`predict` and :meth:`_forward` remove before calling the
        head.

        Args:
            img_feats (tuple[Tensor]): Multi-level features from the neck.
            batch_data_samples (list[DetDataSample], optional): The batch.

        Returns:
            dict: The head's inputs plus ``'routing'``.
        """
        encoder_inputs_dict, decoder_inputs_dict = self.pre_transformer(
            img_feats, batch_data_samples)
        encoder_outputs_dict = self.forward_encoder(**encoder_inputs_dict)
        routing = self._routing(encoder_outputs_dict['memory'],
                                encoder_outputs_dict['memory_mask'],
                                batch_data_samples)
        tmp_dec_in, head_inputs_dict = self.pre_decoder(
            **encoder_outputs_dict, batch_data_samples=batch_data_samples)
        decoder_inputs_dict.update(tmp_dec_in)
        decoder_outputs_dict = self.forward_decoder(
            **decoder_inputs_dict,
            dataset_ids=routing['dataset_ids'],
            image_buckets=routing['image_buckets'])
        head_inputs_dict.update(decoder_outputs_dict)
        head_inputs_dict['routing'] = routing
        return head_inputs_dict

    # ------------------------------------------------------------------
    # losses and predictions
    # ------------------------------------------------------------------
    def moe_losses(self) -> Dict[str, Tensor]:
        """Auxiliary losses of the last forward, summed over MoE layers.

        Returns:
            dict[str, Tensor]: ``loss_moe_aux`` / ``loss_damex_ce`` (already
            weighted by ``aux_loss_weight``) and, for the token-routed modes,
            ``moe_drop_rate`` (logged only).
        """
        losses: Dict[str, Tensor] = {}
        for ffn in self.moe_ffns():
            for key, value in ffn.aux_losses.items():
                losses[key] = losses[key] + value if key in losses else value
        if self.routing != 'gem' and self.moe_ffns():
            dropped = sum(
                ffn.routing_stats['dropped_tokens'] for ffn in self.moe_ffns())
            total = sum(ffn.routing_stats['expert_tokens'].sum() +
                        ffn.routing_stats['dropped_tokens']
                        for ffn in self.moe_ffns())
            losses['moe_drop_rate'] = dropped.float() / total.clamp(min=1)
        return losses

    def loss(self, batch_inputs: Tensor,
             batch_data_samples: SampleList) -> Union[dict, list]:
        """Losses of DINO plus the routers' and the domain classifier's.

        Args:
            batch_inputs (Tensor): ``(bs, 3, H, W)`` images.
            batch_data_samples (list[DetDataSample]): The batch.

        Returns:
            dict: DINO's losses, ``loss_moe_aux`` or ``loss_damex_ce`` for
            the learned routers, and ``loss_domain`` / ``domain_acc`` with a
            domain classifier.
        """
        img_feats = self.extract_feat(batch_inputs)
        head_inputs_dict = self.forward_transformer(img_feats,
                                                    batch_data_samples)
        routing = head_inputs_dict.pop('routing')
        losses = self.bbox_head.loss(
            **head_inputs_dict, batch_data_samples=batch_data_samples)
        losses.update(self.moe_losses())
        logits = routing['domain_logits']
        if logits is not None:
            target = routing['known_dataset_ids'].to(logits.device)
            losses['loss_domain'] = self.domain_loss_weight * \
                self.domain_classifier.loss(logits, target)
            losses['domain_acc'] = (logits.argmax(dim=1) == target).float(
            ).mean() * 100
        return losses

    def restrict_class_scores(self, cls_scores: Tensor,
                              dataset_ids: Tensor) -> Tensor:
        """Set class logits outside each image's dataset range to ``-inf``.

        Args:
            cls_scores (Tensor): ``(..., bs, num_queries, num_classes)``
                logits.
            dataset_ids (Tensor): ``(bs,)`` dataset of each image.

        Returns:
            Tensor: The masked logits.
        """
        if not self.has_label_offsets():
            raise RuntimeError(
                'label_offsets are not set, so test predictions cannot be '
                'restricted to each dataset\'s labels: give the model '
                '`label_offsets` (UODBDataset.label_offsets) in the config, '
                'let GEMPlannerHook install them, or set '
                'restrict_test_labels=False')
        labels = torch.arange(cls_scores.size(-1), device=cls_scores.device)
        ids = dataset_ids.to(cls_scores.device)
        low = self.label_offsets[ids].to(cls_scores.device)
        high = self.label_offsets[ids + 1].to(cls_scores.device)
        allowed = (labels >= low[:, None]) & (labels < high[:, None])
        return cls_scores.masked_fill(~allowed[:, None, :], float('-inf'))

    def predict(self,
                batch_inputs: Tensor,
                batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """Predict boxes, routed and label-restricted per dataset.

        Args:
            batch_inputs (Tensor): ``(bs, 3, H, W)`` images.
            batch_data_samples (list[DetDataSample]): The batch.
            rescale (bool): Whether to rescale boxes to the original image.
                Defaults to True.

        Returns:
            list[DetDataSample]: The samples with ``pred_instances`` (labels
            in the concatenated label space) and, with a domain classifier,
            ``pred_dataset_id`` (int) in their fields.
        """
        img_feats = self.extract_feat(batch_inputs)
        head_inputs_dict = self.forward_transformer(img_feats,
                                                    batch_data_samples)
        routing = head_inputs_dict.pop('routing')
        batch_img_metas = [
            data_sample.metainfo for data_sample in batch_data_samples
        ]
        cls_scores, bbox_preds = self.bbox_head(**head_inputs_dict)
        dataset_ids = routing['dataset_ids']
        restrict = (self.restrict_test_labels and dataset_ids is not None
                    and self.num_datasets > 1)
        if restrict:
            cls_scores = self.restrict_class_scores(cls_scores, dataset_ids)
        results_list = self.bbox_head.predict_by_feat(
            cls_scores,
            bbox_preds,
            batch_img_metas=batch_img_metas,
            rescale=rescale)
        if restrict:
            offsets = self.label_offsets.tolist()
            for i, results in enumerate(results_list):
                d = int(dataset_ids[i])
                keep = (results.labels >= offsets[d]) & (
                    results.labels < offsets[d + 1])
                results_list[i] = results[keep]
        batch_data_samples = self.add_pred_to_datasample(
            batch_data_samples, results_list)
        if routing['domain_logits'] is not None:
            predicted = routing['domain_logits'].argmax(dim=1).tolist()
            for data_sample, pred in zip(batch_data_samples, predicted):
                data_sample.pred_dataset_id = int(pred)
        return batch_data_samples

    def _forward(self,
                 batch_inputs: Tensor,
                 batch_data_samples: OptSampleList = None) -> Tuple[Tensor]:
        """Network forward without post-processing (``mode='tensor'``).

        Args:
            batch_inputs (Tensor): ``(bs, 3, H, W)`` images.
            batch_data_samples (list[DetDataSample], optional): The batch;
                needed for routing in ``'gem'`` mode.

        Returns:
            tuple[Tensor]: The head's outputs.
        """
        img_feats = self.extract_feat(batch_inputs)
        head_inputs_dict = self.forward_transformer(img_feats,
                                                    batch_data_samples)
        head_inputs_dict.pop('routing')
        return self.bbox_head.forward(**head_inputs_dict)
