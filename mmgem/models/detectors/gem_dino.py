# Copyright (c) mmgem contributors. All rights reserved.
"""GEM-DINO: DINO with plan-routed mixture-of-experts decoder FFNs."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmdet.models.detectors import DINO
from mmdet.models.layers import DeformableDetrTransformerEncoder, SinePositionalEncoding
from mmdet.registry import MODELS
from mmdet.structures import OptSampleList, SampleList
from mmdet.utils import OptConfigType
from torch import Tensor, nn

from mmgem.planner import GEMPlan
from mmgem.utils.choices import check_choice

from ..dense_heads.dataset_aware_dino_head import DatasetAwareDINOHead
from ..layers.batch_routing import BatchRouting
from ..layers.dataset_aware_cdn import DatasetAwareCdnQueryGenerator
from ..layers.gem_dino_decoder import GEMDinoTransformerDecoder
from ..layers.moe_ffn import MoEFFN
from ..layers.plan_routing import NO_PLAN_MESSAGE, plan_is_installed, route_images
from ..layers.routing_table import RoutingTable, upgrade_legacy_plan_buffers
from ..routers.builder import router_class, router_config
from ..utils import upcycling
from ..utils.restricted_scores import RestrictedScores
from ..utils.routing_stats import routing_scalars, specialisation_scalars
from .dataset_label_space import TEST_LABEL_SPACES, DatasetLabelSpaceMixin
from .routing_info import dataset_ids_from_samples, image_buckets_from_samples
from .soft_routing import fuse_detections, soft_routing_rows, soft_routing_topk

AUX_LOSS_REDUCTIONS = ('mean', 'sum')
BALANCE_TOKENS = ('foreground', 'all')


@MODELS.register_module()
class GEMDINO(DatasetLabelSpaceMixin, DINO):
    """DINO whose chosen decoder FFNs are mixture-of-experts FFNs.

    The FFNs of decoder layers ``moe_layers`` become :class:`MoEFFN` with
    ``num_experts`` experts of the dense FFN's shape. ``router`` selects
    the method (a :class:`~mmgem.models.routers.BaseRouter` config; all
    share this code), e.g.:

    - ``dict(type='GEMRouter')``: every image goes to the expert the GEM
      plan maps it to (dataset id + stable image hash); no router
      parameters, no auxiliary loss.
    - ``dict(type='DAMEXRouter')``: learned top-1 token router trained with
      the cross-entropy to the plan's expert (``loss_damex_ce``).
    - ``dict(type='Top1Router')``: learned noisy top-1 router with the
      importance + load loss (``loss_moe_aux``).

    The detector asks the router's class what it needs (the plan, in
    training and at test time), which auxiliary loss it has and whether
    that loss takes the foreground token mask; it tests no method name.

    The plan lives in one place, :attr:`routing_table` (a
    :class:`~mmgem.models.layers.routing_table.RoutingTable`: the quota table
    and the routing thresholds cut at the training images, so the realised
    per-expert loads equal the quota, the dataset names, the hash, and the
    :class:`~mmgem.planner.GEMPlan` behind them), which checkpoints carry once
    in the state dict. :class:`GEMPlannerHook` makes or checks it and calls
    :meth:`attach_plan`; ``plan_file`` attaches one without training.
    Routing is computed once per forward: after
    the encoder, the detector looks the batch up in the plan on the host
    (the table lives there; nothing is read from the device) and hands the
    resulting :class:`~mmgem.models.layers.BatchRouting` to every MoE layer.

    Auxiliary router losses (``Top1Router``, ``DAMEXRouter``) are taken after the
    head's loss, as DAMEX's code does: the balancing loss of ``Top1Router`` over
    the foreground tokens (matching queries that the last decoder layer's
    Hungarian assignment matched to a box; denoising queries excluded), the
    cross-entropy of ``DAMEXRouter`` over all tokens; both are averaged over the
    MoE layers (``aux_loss_reduction``) and weighted by ``aux_loss_weight``.
    Logged with the losses: ``moe_load_e<k>`` (share of the kept tokens that
    expert ``k`` processed, mean over the MoE layers), ``moe_drop_rate`` and,
    for ``'damex'``, ``moe_router_acc`` (percent of tokens the router sent to
    their planned expert).

    The label space is the concatenation of the datasets' label sets:
    dataset ``d`` owns labels ``[label_offsets[d], label_offsets[d + 1])``.
    With ``dataset_aware`` (default), training keeps every image in its own
    dataset's label range: the classification losses of the encoder output,
    of every decoder layer and of the denoising queries ignore the other
    datasets' classes (:class:`DatasetAwareDINOHead`), denoising label noise
    is drawn from the image's range (:class:`DatasetAwareCdnQueryGenerator`),
    and the two-stage top-k selection ranks proposals by the image's
    classes only. The Hungarian matching cost already reads only the
    ground-truth classes' logits.

    At test time the dataset of an image is either read from its metainfo
    (``test_dataset_known=True``, the dataset-known protocol: UODB's
    per-dataset evaluation) or unknown (``test_dataset_known=False``, the
    dataset-unknown protocol; GEM's domain classifier then predicts the
    dataset, which only selects the plan row that routes the image).
    ``test_label_space`` says how labels are read
    (:class:`DatasetLabelSpaceMixin`): ``'dataset'`` restricts them to the
    known (or, dataset unknown, the predicted) dataset's range when
    ``restrict_test_labels`` -- that range selects the two-stage top-k and
    class scores outside it are set to ``-inf`` (any box left with such a
    label is dropped); ``'unified'`` makes no dataset decision on labels:
    the scores of classes that share a name (``dataset_classes``) are merged
    by their maximum and the predictions are labelled in the unified space
    (``pred_label_space`` of the data sample; :class:`UODBMetric` with
    ``label_mapping='name'`` scores them). The default reads labels by
    dataset when it is known and unified when it is not. The same rules
    hold for every routing mode and for the dense model (``moe_layers=()``),
    so all rows of a comparison are tested alike.

    Args:
        num_experts (int): Experts per MoE layer. Defaults to 8.
        num_datasets (int): Datasets of the label space and the plan.
            Defaults to 1.
        moe_layers (Sequence[int]): Decoder layers with an MoE FFN.
            Defaults to ``(0, 2, 4)``.
        router (dict, optional): Router config of every MoE layer (see
            :class:`~mmgem.models.routers.BaseRouter`); None with
            ``routing=None`` gives ``dict(type='GEMRouter')``. Defaults to
            None.
        routing (str, optional): Legacy name of the router (``'gem'``,
            ``'damex'``, ``'moe'``); give it or ``router``. Defaults to None.
        aux_loss_weight (float): Weight of the routers' auxiliary losses.
            Defaults to 0.1.
        aux_loss_reduction (str): How the per-layer auxiliary losses are
            combined: ``'mean'`` (DAMEX) or ``'sum'``. Defaults to
            ``'mean'``.
        balance_tokens (str): Tokens of the ``'moe'`` balancing loss:
            ``'foreground'`` (DAMEX: matched matching queries; needs a head
            that exposes ``last_matched_query_mask``) or ``'all'``.
            Defaults to ``'foreground'``.
        capacity_factor (float): Expert capacity factor of the token-routed
            modes. Defaults to 1.25.
        eval_capacity_factor (float, optional): Capacity factor of the
            token-routed modes at test time; None uses ``capacity_factor``.
            Defaults to None.
        gate_noise (float, optional): Router noise scale (see
            :class:`MoEFFN`); None keeps the MoE FFN's default (1.0, DAMEX's
            value). Defaults to None.
        moe_cfg (dict, optional): Further config of the MoE FFNs (e.g.
            ``type`` to swap the implementation, ``capacity_priority``,
            ``balance_loss``), built through the registry. Defaults to
            None.
        upcycle_from (str, optional): Path (or URL) of a dense DINO
            checkpoint with the same architecture. At :meth:`init_weights`
            all its weights are loaded and the dense FFN of every MoE layer
            is copied into each of its experts (sparse upcycling); keys whose
            shapes differ (e.g. a head with another number of classes) are
            skipped with a warning. ``load_from`` / ``resume`` still apply
            afterwards. Defaults to None.
        domain_classifier (dict, optional): Config of a
            :class:`DomainClassifier` (``num_datasets``, ``embed_dims`` and
            ``num_levels`` are filled in) on mean-pooled encoder memory (or,
            ``input='neck'``, the neck's levels), trained with loss
            ``loss_domain`` against the true dataset. It predicts the dataset
            of a test image (``pred_dataset_id`` of the predictions), which
            ``test_dataset_known=False`` needs. With its ``detach_input``
            (the mmgem configs, every row) its gradient stops at the encoder
            memory, so it is no extra training signal for the detector.
            Defaults to None.
        domain_loss_weight (float): Weight of ``loss_domain``. Defaults to
            0.1.
        dataset_aware (bool): Train each image in its dataset's label range
            (see above); needs a :class:`DatasetAwareDINOHead` when
            ``num_datasets > 1``. False trains as mmdet's DINO over all
            classes. Defaults to True.
        test_dataset_known (bool): Whether the dataset of a test image is
            read from its metainfo (True) or predicted (False). Defaults to
            True.
        restrict_test_labels (bool): Whether test predictions (and the
            two-stage top-k) are restricted to the known or predicted
            dataset's label range. Defaults to True.
        test_label_space (str, optional): ``'dataset'`` or ``'unified'``
            (see above); None: ``'dataset'`` when ``test_dataset_known``,
            else ``'unified'``, following ``test_dataset_known`` when it is
            changed later (``GEMDetInferencer`` does). Defaults to None.
        dataset_classes (Sequence[Sequence[str]], optional): Class names of
            every dataset, in dataset order: the unified space
            (:class:`~mmgem.utils.label_space.UnifiedLabelSpace`). None: no
            names, unified predictions keep the concatenated labels.
            Defaults to None.
        label_merge_table (dict, optional): Synonyms of the unified space
            (normalised name -> the name it is read as); None: the default
            table (none). Defaults to None.
        label_offsets (Sequence[int], optional): ``num_datasets + 1``
            cumulative label offsets (``UODBDataset.label_offsets``). None
            gives ``[0, num_classes]`` for one dataset and "unset" (zeros,
            to be installed by the hook) otherwise. Defaults to None.
        soft_routing (dict, optional): ``dict(topk=k)``: with the dataset
            unknown, route every test image by the plan rows of the domain
            classifier's ``k`` likeliest datasets (the decoder runs ``k``
            times, the encoder once) and fuse the detections weighted by the
            renormalised probabilities
            (:mod:`~mmgem.models.detectors.soft_routing`); needs plan-routed
            MoE layers and a domain classifier. Test only; ignored with
            ``test_dataset_known``. None (default): hard routing by the
            top-1 dataset.
        plan_file (str, optional): A plan JSON (``work_dir/gem_plan.json``
            of a training run, or ``tools/analysis_tools/gem_plan.py``'s
            output) attached when the model is built (:meth:`attach_plan`):
            the one way to give a model a plan without training (mmdet's
            ``get_flops.py``, ``DetInferencer`` without weights, ``test.py``
            on a config without ``GEMPlannerHook``). In training,
            ``GEMPlannerHook`` checks it against the data like a plan
            restored from a checkpoint. A checkpoint loaded later replaces
            it with its own plan. Defaults to None.
        *args, **kwargs: Those of mmdet's ``DINO``.
    """

    def __init__(self,
                 *args,
                 num_experts: int = 8,
                 num_datasets: int = 1,
                 moe_layers: Sequence[int] = (0, 2, 4),
                 router: OptConfigType = None,
                 routing: Optional[str] = None,
                 aux_loss_weight: float = 0.1,
                 aux_loss_reduction: str = 'mean',
                 balance_tokens: str = 'foreground',
                 capacity_factor: float = 1.25,
                 eval_capacity_factor: Optional[float] = None,
                 gate_noise: Optional[float] = None,
                 moe_cfg: OptConfigType = None,
                 upcycle_from: Optional[str] = None,
                 domain_classifier: OptConfigType = None,
                 domain_loss_weight: float = 0.1,
                 dataset_aware: bool = True,
                 test_dataset_known: bool = True,
                 restrict_test_labels: bool = True,
                 test_label_space: Optional[str] = None,
                 dataset_classes: Optional[Sequence[Sequence[str]]] = None,
                 label_merge_table: Optional[Dict[str, str]] = None,
                 label_offsets: Optional[Sequence[int]] = None,
                 soft_routing: Optional[dict] = None,
                 plan_file: Optional[str] = None,
                 **kwargs) -> None:
        router_cfg = router_config(router, routing)
        #: The routers' class: what they need from a batch, their loss.
        self.router_cls = router_class(router_cfg)
        check_choice('aux_loss_reduction', aux_loss_reduction, AUX_LOSS_REDUCTIONS)
        check_choice('balance_tokens', balance_tokens, BALANCE_TOKENS)
        self.num_experts = num_experts
        self.num_datasets = num_datasets
        self.moe_layers = tuple(int(i) for i in moe_layers)
        self.routing = self.router_cls.name
        self.aux_loss_weight = aux_loss_weight
        self.aux_loss_reduction = aux_loss_reduction
        self.balance_tokens = balance_tokens
        self._moe_cfg = dict(
            num_experts=num_experts,
            router=router_cfg,
            capacity_factor=capacity_factor,
            eval_capacity_factor=eval_capacity_factor)
        if gate_noise is not None:
            self._moe_cfg['gate_noise'] = gate_noise
        self._moe_cfg.update(moe_cfg or {})
        super().__init__(*args, **kwargs)
        self.upcycle_from = upcycle_from
        self.domain_loss_weight = domain_loss_weight
        self.dataset_aware = dataset_aware
        self.test_dataset_known = test_dataset_known
        self.restrict_test_labels = restrict_test_labels
        if test_label_space is not None:
            check_choice('test_label_space', test_label_space, TEST_LABEL_SPACES)
        self.test_label_space_cfg = test_label_space
        if domain_classifier is not None:
            cfg = dict(type='DomainClassifier')
            cfg.update(domain_classifier)
            cfg.update(num_datasets=num_datasets, embed_dims=self.embed_dims,
                       num_levels=self.num_feature_levels)
            self.domain_classifier = MODELS.build(cfg)
        else:
            self.domain_classifier = None
        if (not test_dataset_known and self.router_cls.needs_plan_at_test
                and self.domain_classifier is None):
            raise ValueError(
                f'test_dataset_known=False with {self.router_cls.__name__} needs a '
                'domain_classifier to predict the dataset that routes each '
                'test image')
        if (not test_dataset_known and restrict_test_labels
                and self.test_label_space == 'dataset' and num_datasets > 1
                and self.domain_classifier is None):
            raise ValueError(
                'test_dataset_known=False with restrict_test_labels=True '
                'needs a domain_classifier to predict the dataset whose '
                'labels each test image is restricted to (or set '
                'restrict_test_labels=False, or test_label_space='
                '"unified")')
        #: ``k`` of soft routing, 0 when off (hard routing by the top-1 row)
        self.soft_routing_topk = soft_routing_topk(soft_routing, num_datasets)
        if self.soft_routing_topk and (self.domain_classifier is None or not self.moe_layers
                                       or not self.router_cls.needs_plan_at_test):
            raise ValueError(
                'soft_routing routes test images by plan rows: it needs MoE layers '
                f'(moe_layers={self.moe_layers}), a router that reads the plan at test time '
                f'(got {self.router_cls.__name__}) and a domain_classifier')
        if (dataset_aware and num_datasets > 1
                and not isinstance(self.bbox_head, DatasetAwareDINOHead)):
            raise ValueError(
                f'dataset_aware=True with num_datasets={num_datasets} needs '
                "bbox_head=dict(type='DatasetAwareDINOHead', ...) (it masks "
                'the other datasets\' classes in the losses), got '
                f'{type(self.bbox_head).__name__}; or set dataset_aware=False')
        self.dn_query_generator = self._dataset_aware_dn_generator(
            kwargs.get('dn_cfg'))
        num_classes = self.bbox_head.num_classes
        self.register_buffer(
            'label_offsets',
            torch.zeros(num_datasets + 1, dtype=torch.long))
        if label_offsets is not None:
            self.set_label_offsets(label_offsets)
        elif num_datasets == 1:
            self.set_label_offsets([0, num_classes])
        self.set_unified_label_space(dataset_classes, label_merge_table)
        #: the model's one copy of the GEM plan (checkpoints hold it once)
        self.routing_table = RoutingTable(num_datasets, num_experts)
        self._register_load_state_dict_pre_hook(upgrade_legacy_plan_buffers)
        #: Set by :class:`~mmgem.engine.hooks.MoERoutingVisualizationHook`:
        #: keep the routing of every test forward in :attr:`routing_record`.
        self.record_routing = False
        self.routing_record: Optional[Dict] = None
        self.plan_file = plan_file
        if plan_file is not None:
            self.attach_plan(GEMPlan.load(plan_file), source=f'plan_file={plan_file!r}')

    def _init_layers(self) -> None:
        """Initialize layers except for backbone, neck and bbox_head.

        As DINO's, with :class:`GEMDinoTransformerDecoder` as decoder.
        """
        self.positional_encoding = SinePositionalEncoding(
            **self.positional_encoding)
        self.encoder = DeformableDetrTransformerEncoder(**self.encoder)
        self.decoder = GEMDinoTransformerDecoder(
            **self.decoder, moe_layers=self.moe_layers, moe_cfg=self._moe_cfg)
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

    def attach_plan(self, plan: GEMPlan, source: str = 'plan') -> None:
        """Route by a GEM plan (kept, with its provenance, in :attr:`routing_table`).

        Args:
            plan (GEMPlan): The plan; ``num_datasets x num_experts``.
            source (str): Where it came from, for messages.
        """
        want = (self.num_datasets, self.num_experts)
        if tuple(plan.quota.shape) != want:
            raise ValueError(
                f'GEMDINO: {source} holds a plan for {plan.quota.shape[0]} datasets '
                f'{list(plan.dataset_names)} x {plan.quota.shape[1]} experts, but the model '
                f'has num_datasets={want[0]} and num_experts={want[1]}')
        self.routing_table.attach(plan, source)

    def install_plan(self,
                     quota: np.ndarray,
                     label_offsets: Optional[np.ndarray] = None,
                     plan_hash: str = '',
                     dataset_names: Optional[Sequence[str]] = None,
                     thresholds: Optional[np.ndarray] = None) -> None:
        """Route by a bare quota table (no plan object; tests and benchmarks).

        Args:
            quota (np.ndarray): ``(num_datasets, num_experts)`` integer quota.
            label_offsets (np.ndarray, optional): ``num_datasets + 1`` label
                offsets; None keeps the current ones.
            plan_hash (str): A label of the table.
            dataset_names (Sequence[str], optional): The names keying the
                image hash; None keeps the current ones.
            thresholds (np.ndarray, optional): Routing thresholds; None routes
                by the quantiles of the quota.
        """
        table = RoutingTable(self.num_datasets, self.num_experts)
        table.dataset_names = self.routing_table.dataset_names
        table.set_routing(quota, thresholds, dataset_names, plan_hash)  # checks first
        if label_offsets is not None:
            self.set_label_offsets(label_offsets)
        self.routing_table.set_extra_state(table.get_extra_state())

    def has_plan(self) -> bool:
        """bool: Whether the model has MoE layers and a (non-zero) plan."""
        return bool(self.moe_ffns()) and self.routing_table.is_set()

    def installed_plan_hash(self) -> str:
        """str: Hash of the installed plan, ``''`` when none was given."""
        return self.routing_table.plan_hash

    def installed_plan_quota(self) -> np.ndarray:
        """np.ndarray: The installed ``(num_datasets, num_experts)`` quota."""
        return self.routing_table.quota.numpy().copy()

    def installed_dataset_names(self) -> Tuple[str, ...]:
        """tuple[str]: The installed plan's dataset names (``()`` if none)."""
        return self.routing_table.dataset_names

    def installed_plan_thresholds(self) -> np.ndarray:
        """np.ndarray: The installed ``(num_datasets, num_experts)`` thresholds."""
        return self.routing_table.thresholds.numpy().copy()

    def host_plan(self) -> Tuple[Tensor, Tuple[str, ...], Tensor]:
        """The plan's quota table, dataset names and thresholds, on the host.

        Returns:
            tuple[Tensor, tuple[str], Tensor]: :meth:`RoutingTable.host`.
        """
        return self.routing_table.host()

    # ------------------------------------------------------------------
    # upcycling
    # ------------------------------------------------------------------
    def upcycle_state_dict(self, dense_state_dict: Dict[str, Tensor]
                           ) -> Dict[str, Tensor]:
        """:func:`~mmgem.models.utils.upcycling.upcycle_state_dict` of this model."""
        return upcycling.upcycle_state_dict(self, dense_state_dict)

    def load_dense_state_dict(self,
                              dense_state_dict: Dict[str, Tensor],
                              strict: bool = False) -> None:
        """:func:`~mmgem.models.utils.upcycling.load_dense_state_dict` into this model."""
        upcycling.load_dense_state_dict(self, dense_state_dict, strict)

    def upcycle_from_checkpoint(self, filename: str) -> None:
        """:func:`~mmgem.models.utils.upcycling.upcycle_from_checkpoint` into this model."""
        upcycling.upcycle_from_checkpoint(self, filename)

    # ------------------------------------------------------------------
    # routing
    # ------------------------------------------------------------------
    def _domain_logits(self, memory: Tensor, memory_mask: Optional[Tensor],
                       encoder_inputs: Optional[Dict] = None) -> Optional[Tensor]:
        """The domain classifier's ``(B, num_datasets)`` logits (None without one).

        A classifier on the encoder memory (``input='memory'``) reads
        ``memory``; one on the neck's levels (``input='neck'``) reads the
        encoder's input (``feat``, ``feat_mask``, ``spatial_shapes`` of
        ``encoder_inputs``, from :meth:`pre_transformer`).
        """
        classifier = self.domain_classifier
        if classifier is None:
            return None
        if classifier.input == 'memory':
            return classifier(memory, memory_mask)
        if encoder_inputs is None:
            raise ValueError(f"a DomainClassifier with input={classifier.input!r} needs "
                             "the encoder inputs ('feat', 'feat_mask', 'spatial_shapes')")
        return classifier(encoder_inputs['feat'], encoder_inputs['feat_mask'],
                          encoder_inputs['spatial_shapes'])

    def _routing(self, memory: Tensor, memory_mask: Optional[Tensor],
                 batch_data_samples: OptSampleList,
                 domain_logits: Optional[Tensor] = None,
                 route_dataset_ids: Optional[Tensor] = None) -> Dict:
        """The batch's routing, computed once for every MoE layer.

        The dataset of every image is read from its metainfo in training and
        with ``test_dataset_known=True``; otherwise it is the domain
        classifier's prediction, and nothing about the image's true dataset
        (id, name, path) is read. ``'gem'`` (and ``'damex'`` in training, for
        its targets) then looks each image up in the plan: its bucket hashes
        the plan's name of the routing dataset with the image's ``img_id``
        (with the true dataset known, a plan without names falls back to the
        metainfo's ``dataset_name``, and a missing ``img_id`` to the
        ``img_path``; with the dataset predicted, a missing ``img_id`` gives
        bucket 0, the dataset's first shard).

        Args:
            memory (Tensor): ``(B, N, C)`` encoder memory.
            memory_mask (Tensor, optional): ``(B, N)`` padding mask.
            batch_data_samples (list[DetDataSample], optional): The batch.
            domain_logits (Tensor, optional): The domain classifier's logits,
                if computed already (:meth:`_domain_logits`); None computes
                them from ``memory``.
            route_dataset_ids (Tensor, optional): ``(B,)`` datasets to route
                as when the dataset is unknown, instead of the classifier's
                top-1 (soft routing's rows). Defaults to None.

        Returns:
            dict: ``batch`` (:class:`BatchRouting`, every tensor on the
            host), ``domain_logits`` (or None) and ``known_dataset_ids``
            (true ids from the metainfo, or None when they are not read).
        """
        if domain_logits is None:
            domain_logits = self._domain_logits(memory, memory_mask)
        known = self.training or self.test_dataset_known
        known_ids = None
        if batch_data_samples is not None and known:
            known_ids = dataset_ids_from_samples(batch_data_samples,
                                                 self.num_datasets)
        if known:
            dataset_ids = known_ids
        elif route_dataset_ids is not None:
            dataset_ids = route_dataset_ids.cpu().long()
        elif domain_logits is not None:
            # the one device -> host transfer of a dataset-unknown forward
            dataset_ids = domain_logits.argmax(dim=1).cpu()
        else:
            dataset_ids = None
        needs_plan_route = (self.router_cls.needs_plan if self.training else
                            self.router_cls.needs_plan_at_test)
        if (self.router_cls.needs_dataset_ids and self.moe_ffns()
                and dataset_ids is None):
            raise ValueError(
                f'GEMDINO with {self.router_cls.__name__} needs the dataset of '
                'every image: batch data samples with dataset_id, or a domain '
                'classifier when the test dataset is unknown')
        image_experts = None
        if needs_plan_route and self.moe_ffns():
            if batch_data_samples is None or dataset_ids is None:
                raise ValueError(
                    f'GEMDINO with {self.router_cls.__name__} needs the batch data '
                    'samples (dataset_id, dataset_name, img_id) to route')
            quota, names, thresholds = self.host_plan()
            if not plan_is_installed(quota):
                raise RuntimeError(NO_PLAN_MESSAGE)
            if not plan_is_installed(thresholds):
                raise ValueError(
                    'the installed GEM plan has a quota table but no routing thresholds '
                    '(plan_thresholds is all zeros: a checkpoint made before plans carried '
                    'them); re-plan it with GEMPlannerHook')
            if not names and not known:
                raise RuntimeError(
                    'the installed GEM plan has no dataset names, which '
                    'routing a test image by its predicted dataset needs: '
                    'install the plan with dataset_names (GEMPlannerHook '
                    'does) or test with test_dataset_known=True')
            buckets = image_buckets_from_samples(
                batch_data_samples,
                dataset_names=[names[d] for d in dataset_ids.tolist()]
                if names else None,
                read_metainfo_dataset=known)
            image_experts = route_images(thresholds, dataset_ids, buckets)
        return dict(
            batch=BatchRouting(
                image_experts=image_experts, dataset_ids=dataset_ids),
            known_dataset_ids=known_ids,
            domain_logits=domain_logits)

    def forward_transformer(self,
                            img_feats: Tuple[Tensor],
                            batch_data_samples: OptSampleList = None
                            ) -> Dict:
        """DINO's transformer forward, with routing to the MoE layers.

        The routing is computed once, after the encoder (the domain
        classifier reads its memory), and passed through
        ``forward_decoder``'s kwargs to every MoE decoder layer. The
        returned dict carries it under ``'routing'``, which :meth:`loss`,
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
        memory = encoder_outputs_dict['memory']
        memory_mask = encoder_outputs_dict['memory_mask']
        routing = self._routing(
            memory, memory_mask, batch_data_samples,
            self._domain_logits(memory, memory_mask, encoder_inputs_dict))
        return self._decode(encoder_outputs_dict, decoder_inputs_dict, routing,
                            batch_data_samples, routing['domain_logits'])

    def _decode(self, encoder_outputs_dict: Dict, decoder_inputs_dict: Dict,
                routing: Dict, batch_data_samples: OptSampleList,
                label_logits: Optional[Tensor]) -> Dict:
        """Pre-decoder and decoder of one routing (the second half of
        :meth:`forward_transformer`; soft routing runs it once per row).

        Args:
            encoder_outputs_dict (dict): :meth:`forward_encoder`'s outputs.
            decoder_inputs_dict (dict): :meth:`pre_transformer`'s decoder
                inputs (not modified).
            routing (dict): :meth:`_routing`'s result.
            batch_data_samples (list[DetDataSample], optional): The batch.
            label_logits (Tensor, optional): Domain logits handed to
                :meth:`pre_decoder` (their argmax is the predicted dataset
                of the label restriction).

        Returns:
            dict: The head's inputs plus ``'routing'``.
        """
        tmp_dec_in, head_inputs_dict = self.pre_decoder(
            **encoder_outputs_dict,
            batch_data_samples=batch_data_samples,
            domain_logits=label_logits)
        decoder_inputs_dict = dict(decoder_inputs_dict, **tmp_dec_in)
        dn_meta = head_inputs_dict.get('dn_meta')
        if dn_meta:  # routers that mix tokens keep the denoising groups apart
            routing['batch'].num_denoising_queries = int(dn_meta['num_denoising_queries'])
            routing['batch'].num_denoising_groups = int(dn_meta['num_denoising_groups'])
        decoder_outputs_dict = self.forward_decoder(
            **decoder_inputs_dict, routing=routing['batch'])
        head_inputs_dict.update(decoder_outputs_dict)
        head_inputs_dict['routing'] = routing
        return head_inputs_dict

    # ------------------------------------------------------------------
    # losses and predictions
    # ------------------------------------------------------------------
    def _foreground_token_mask(self, dn_meta: Optional[dict],
                               num_images: int) -> Tensor:
        """``(B, N)`` mask of the foreground decoder tokens of the last loss.

        The foreground tokens are the matching queries that the last decoder
        layer's Hungarian assignment matched to a ground-truth box (the
        head's ``last_matched_query_mask``); the denoising queries, which
        come first in every image, are not foreground (DAMEX's ``fg_mask``).
        """
        matched = getattr(self.bbox_head, 'last_matched_query_mask', None)
        if matched is None:
            raise RuntimeError(
                'GEMDINO(balance_tokens="foreground") with a token-masked '
                'auxiliary loss needs '
                'the matched queries of the last decoder layer, which the '
                f'head {type(self.bbox_head).__name__} does not expose '
                '(last_matched_query_mask): use the dataset-aware head of '
                'the mmgem configs or set balance_tokens="all"')
        num_dn = 0 if dn_meta is None else int(
            dn_meta['num_denoising_queries'])
        if matched.size(0) != num_images:
            raise ValueError(
                f'last_matched_query_mask covers {matched.size(0)} images, '
                f'the batch has {num_images}')
        return torch.cat([matched.new_zeros(num_images, num_dn), matched],
                         dim=1)

    def moe_losses(self, dn_meta: Optional[dict] = None,
                   num_images: int = 0,
                   dataset_ids: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Auxiliary losses and routing scalars of the last forward.

        Call it after the head's loss (the ``'moe'`` balancing loss needs
        the head's matching).

        Args:
            dn_meta (dict, optional): The forward's denoising meta (how many
                denoising queries lead every image's tokens).
            num_images (int): Batch size.
            dataset_ids (Tensor, optional): ``(B,)`` dataset of every image;
                given, ``moe_nmi_d<layer>`` (normalised mutual information of
                dataset and expert over the foreground tokens, or all tokens
                when the head exposes no matching) is logged per MoE layer.

        Returns:
            dict[str, Tensor]: In training with a learned router,
            ``loss_moe_aux`` / ``loss_damex_ce`` (mean or sum over the MoE
            layers, times ``aux_loss_weight``); ``moe_load_e<k>`` for every
            expert, ``moe_drop_rate`` and, for ``'damex'`` in training,
            ``moe_router_acc`` (logged only).
        """
        ffns = self.moe_ffns()
        if not ffns:
            return {}
        losses: Dict[str, Tensor] = {}
        router = self.router_cls
        if self.training and router.aux_loss_name is not None:
            mask = None
            if (router.aux_loss_uses_token_mask
                    and self.balance_tokens == 'foreground'):
                mask = self._foreground_token_mask(dn_meta, num_images)
            # a router may have no loss in some configurations (None)
            per_layer = [loss for loss in (ffn.aux_loss(mask) for ffn in ffns)
                         if loss is not None]
            if per_layer:
                total = torch.stack(per_layer).sum()
                if self.aux_loss_reduction == 'mean':
                    total = total / len(per_layer)
                losses[router.aux_loss_name] = self.aux_loss_weight * total
        stats = [ffn.routing_stats for ffn in ffns]
        losses.update(routing_scalars(stats))
        losses.update(router.log_scalars(stats, self.training))
        if dataset_ids is not None:
            fg = None
            if getattr(self.bbox_head, 'last_matched_query_mask', None) is not None:
                fg = self._foreground_token_mask(dn_meta, num_images)
            losses.update(specialisation_scalars(
                stats, dataset_ids, self.num_datasets, self.num_experts,
                [f'd{i}' for i in self.moe_layers], fg))
        return losses

    def loss(self, batch_inputs: Tensor,
             batch_data_samples: SampleList) -> Union[dict, list]:
        """Losses of DINO plus the routers' and the domain classifier's.

        With ``dataset_aware`` every classification loss of an image runs
        over its dataset's label range only (see the class docstring).

        Args:
            batch_inputs (Tensor): ``(bs, 3, H, W)`` images.
            batch_data_samples (list[DetDataSample]): The batch.

        Returns:
            dict: DINO's losses, ``loss_moe_aux`` or ``loss_damex_ce`` for
            the learned routers, and ``loss_domain`` / ``domain_acc`` with a
            domain classifier.

        Raises:
            ValueError: If a ground-truth label lies outside its image's
                dataset range (wrong ``label_offsets`` or ``dataset_id``).
        """
        label_ranges = None
        if self.dataset_aware:
            label_ranges = self.label_ranges(
                self.label_dataset_ids(batch_data_samples))
            self._check_gt_labels(batch_data_samples, label_ranges)
        img_feats = self.extract_feat(batch_inputs)
        head_inputs_dict = self.forward_transformer(img_feats,
                                                    batch_data_samples)
        routing = head_inputs_dict.pop('routing')
        if label_ranges is not None and isinstance(self.bbox_head,
                                                   DatasetAwareDINOHead):
            head_inputs_dict['label_ranges'] = label_ranges
        losses = self.bbox_head.loss(
            **head_inputs_dict, batch_data_samples=batch_data_samples)
        losses.update(
            self.moe_losses(head_inputs_dict.get('dn_meta'),
                            len(batch_data_samples),
                            routing['batch'].dataset_ids))
        logits = routing['domain_logits']
        if logits is not None:
            target = routing['known_dataset_ids'].to(logits.device)
            losses['loss_domain'] = self.domain_loss_weight * \
                self.domain_classifier.loss(logits, target)
            losses['domain_acc'] = (logits.argmax(dim=1) == target).float(
            ).mean() * 100
        return losses

    def _dataset_aware_dn_generator(self, dn_cfg: OptConfigType
                                    ) -> DatasetAwareCdnQueryGenerator:
        """DINO's CDN generator as :class:`DatasetAwareCdnQueryGenerator`.

        ``DINO.__init__`` built mmdet's generator from ``dn_cfg`` (filling
        in ``num_classes``, ``embed_dims`` and ``num_matching_queries``); the
        replacement takes the same config and the same label embedding, so
        the model's state dict and initial weights are DINO's.
        """
        generator = DatasetAwareCdnQueryGenerator(**dn_cfg)
        generator.label_embedding.load_state_dict(
            self.dn_query_generator.label_embedding.state_dict())
        return generator

    def pre_decoder(self,
                    memory: Tensor,
                    memory_mask: Tensor,
                    spatial_shapes: Tensor,
                    batch_data_samples: OptSampleList = None,
                    domain_logits: Optional[Tensor] = None) -> Tuple[Dict]:
        """DINO's pre-decoder with the top-k and the DN noise per dataset.

        As :meth:`DINO.pre_decoder`, except that the two-stage top-k ranks
        each image's proposals by the maximum over its dataset's classes
        (:meth:`label_dataset_ids`; all classes when that is None) and the
        denoising label noise stays in the image's range in training. The
        encoder scores handed to the loss (``enc_outputs_class``) keep all
        classes; the head masks them. mmdet's method runs unchanged: for its
        call the encoder classifier's output is masked to the ranges
        (:class:`RestrictedScores`) and the generator draws in them
        (:meth:`DatasetAwareCdnQueryGenerator.batch_label_ranges`).

        Args:
            memory, memory_mask, spatial_shapes, batch_data_samples: As in
                :meth:`DINO.pre_decoder`.
            domain_logits (Tensor, optional): ``(bs, num_datasets)`` domain
                logits of the batch, if already computed; the domain
                classifier is run on ``memory`` when they are needed (test,
                dataset unknown) and not given. Defaults to None.

        Returns:
            tuple[dict]: ``decoder_inputs_dict`` and ``head_inputs_dict``, as
            DINO's.
        """
        if (domain_logits is None and not self.training
                and not self.test_dataset_known
                and self.domain_classifier is not None):
            domain_logits = self.domain_classifier(memory, memory_mask)
        label_ranges = self.label_ranges(
            self.label_dataset_ids(batch_data_samples, domain_logits))
        if label_ranges is None:
            return super().pre_decoder(memory, memory_mask, spatial_shapes,
                                       batch_data_samples)
        enc_classifier = self.bbox_head.cls_branches[self.decoder.num_layers]
        with RestrictedScores(enc_classifier, label_ranges) as restricted, \
                self.dn_query_generator.batch_label_ranges(label_ranges):
            decoder_inputs_dict, head_inputs_dict = super().pre_decoder(
                memory, memory_mask, spatial_shapes, batch_data_samples)
        if self.training:  # the selected proposals' scores of all classes
            head_inputs_dict['enc_outputs_class'] = restricted.topk_scores(
                self.num_queries)
        return decoder_inputs_dict, head_inputs_dict

    def predict(self,
                batch_inputs: Tensor,
                batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """Predict boxes, routed, in the test label space.

        With ``test_label_space='dataset'``, the label restriction
        (``restrict_test_labels``) uses the true dataset when
        ``test_dataset_known``, else the domain classifier's prediction;
        with ``'unified'``, same-named classes are merged and labels are
        unified ids. For every routing mode alike
        (:meth:`label_dataset_ids`, :meth:`test_class_scores`). With the
        dataset unknown and ``soft_routing``, the detections of the top-k
        plan rows are fused (:meth:`_soft_routed_results`).

        Args:
            batch_inputs (Tensor): ``(bs, 3, H, W)`` images.
            batch_data_samples (list[DetDataSample]): The batch.
            rescale (bool): Whether to rescale boxes to the original image.
                Defaults to True.

        Returns:
            list[DetDataSample]: The samples with ``pred_instances``,
            ``pred_label_space`` (``'concat'`` or ``'unified'``: the space
            of the labels) and, with a domain classifier,
            ``pred_dataset_id`` (int) in their fields.
        """
        img_feats = self.extract_feat(batch_inputs)
        if self.soft_routing_topk and not self.test_dataset_known:
            results_list, domain_logits = self._soft_routed_results(
                img_feats, batch_data_samples, rescale)
        else:
            head_inputs_dict = self.forward_transformer(img_feats,
                                                        batch_data_samples)
            domain_logits = head_inputs_dict.pop('routing')['domain_logits']
            results_list = self._head_results(head_inputs_dict, batch_data_samples,
                                              domain_logits, rescale)
        batch_data_samples = self.add_pred_to_datasample(
            batch_data_samples, results_list)
        for data_sample in batch_data_samples:
            data_sample.pred_label_space = self.pred_label_space
        if domain_logits is not None:
            predicted = domain_logits.argmax(dim=1).tolist()
            for data_sample, pred in zip(batch_data_samples, predicted):
                data_sample.pred_dataset_id = int(pred)
        return batch_data_samples

    def _head_results(self, head_inputs_dict: Dict, batch_data_samples: SampleList,
                      label_logits: Optional[Tensor], rescale: bool,
                      record: bool = True) -> list:
        """The head's post-processed predictions in the test label space.

        Args:
            head_inputs_dict (dict): The head's inputs (no ``'routing'``).
            batch_data_samples (list[DetDataSample]): The batch.
            label_logits (Tensor, optional): Domain logits whose argmax is
                the predicted dataset of the label restriction.
            rescale (bool): Whether to rescale boxes to the original image.
            record (bool): Whether this forward may be kept by
                ``record_routing``. Defaults to True.

        Returns:
            list[InstanceData]: One per image.
        """
        cls_scores, bbox_preds = self.bbox_head(**head_inputs_dict)
        dataset_ids = self.label_dataset_ids(batch_data_samples, label_logits)
        cls_scores = self.test_class_scores(cls_scores, dataset_ids)
        if record and self.record_routing:
            self._record_routing(cls_scores, batch_data_samples)
        results_list = self.bbox_head.predict_by_feat(
            cls_scores,
            bbox_preds,
            batch_img_metas=[s.metainfo for s in batch_data_samples],
            rescale=rescale)
        return self.test_results(results_list, dataset_ids)

    def _soft_routed_results(self, img_feats: Tuple[Tensor],
                             batch_data_samples: SampleList,
                             rescale: bool) -> Tuple[list, Tensor]:
        """Predictions routed by the top-k plan rows, fused (``soft_routing``).

        The encoder and the domain classifier run once; for the ``j``-th
        likeliest dataset of every image the pre-decoder, the decoder (routed
        by that dataset's plan row) and the head run, with that dataset as
        the predicted one for the label restriction
        (``test_label_space='dataset'``); the runs' detections are fused by
        :func:`~mmgem.models.detectors.soft_routing.fuse_detections`.
        ``record_routing`` keeps the top-1 run.

        Returns:
            tuple[list[InstanceData], Tensor]: The fused predictions and the
            domain logits.
        """
        encoder_inputs_dict, decoder_inputs_dict = self.pre_transformer(
            img_feats, batch_data_samples)
        encoder_outputs_dict = self.forward_encoder(**encoder_inputs_dict)
        memory = encoder_outputs_dict['memory']
        memory_mask = encoder_outputs_dict['memory_mask']
        domain_logits = self._domain_logits(memory, memory_mask, encoder_inputs_dict)
        rows, weights = soft_routing_rows(domain_logits, self.soft_routing_topk)
        runs = []
        for j in range(rows.size(1)):
            # logits whose argmax is the row: the label restriction's dataset
            row_logits = torch.nn.functional.one_hot(rows[:, j], self.num_datasets).to(
                domain_logits)
            routing = self._routing(memory, memory_mask, batch_data_samples, domain_logits,
                                    route_dataset_ids=rows[:, j])
            head_inputs_dict = self._decode(encoder_outputs_dict, decoder_inputs_dict,
                                            routing, batch_data_samples, row_logits)
            head_inputs_dict.pop('routing')
            runs.append(self._head_results(head_inputs_dict, batch_data_samples, row_logits,
                                           rescale, record=j == 0))
        # as the head: max_per_img, or every query
        max_per_img = (self.bbox_head.test_cfg or {}).get('max_per_img', self.num_queries)
        results_list = [
            fuse_detections([run[b] for run in runs], weights[b], max_per_img)
            for b in range(len(batch_data_samples))
        ]
        return results_list, domain_logits

    def _record_routing(self, cls_scores: Tensor,
                        batch_data_samples: SampleList) -> None:
        """Keep what a routing heat map needs of this test forward.

        Sets :attr:`routing_record`: ``token_experts`` (per MoE layer, the
        ``(B, num_queries)`` expert of every query, -1 if dropped),
        ``query_scores`` (``(B, num_queries)`` highest class probability of
        every query in the last decoder layer, after any label restriction)
        and ``dataset_ids`` (the images' true datasets from the metainfo, or
        -1; used for the statistics only, never for predictions).
        """
        true_ids = [
            int(s.metainfo.get('dataset_id', -1)) for s in batch_data_samples
        ]
        self.routing_record = dict(
            token_experts=[
                ffn.routing_stats['token_experts'].detach()
                for ffn in self.moe_ffns()
            ],
            query_scores=cls_scores[-1].detach().sigmoid().max(dim=-1)[0],
            dataset_ids=torch.tensor(true_ids, dtype=torch.long))

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
