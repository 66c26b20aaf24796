# Copyright (c) mmgem contributors. All rights reserved.
"""Expert-parallel MoE FFN: each rank holds ``M / E`` of the ``M`` experts.

:class:`ExpertParallelMoEFFN` is an :class:`~mmgem.models.layers.MoEFFN`
whose batched expert tensors ``w1``, ``b1``, ``w2`` and ``b2`` hold only the
experts of this rank (see :mod:`mmgem.models.layers.ep_topology` for the
layout). Everything else (router, plan buffer, dropout, residual) is
replicated and behaves as in :class:`MoEFFN`. A forward pass:

1. routes locally exactly as :class:`MoEFFN` does (``'gem'``: the plan's
   expert of every image, for all of its tokens; ``'damex'``/``'moe'``: the
   router's top-1 expert of every token, under the capacity limit computed on
   this rank's batch, as in data-parallel training);
2. counts the tokens for every expert and all-gathers the counts (the split
   sizes of every rank, so the receivers know what comes). In ``'gem'``
   mode the counts follow from the images' planned experts, which are on
   the host and the same for every MoE layer of a forward: they are
   gathered once per forward, on the host (a gloo group), and kept in the
   forward's :class:`~mmgem.models.layers.BatchRouting` (``shared``) for
   the other layers, so a layer never waits for the device. In the
   token-routed modes the router decides on the device, per layer, and the
   counts are gathered there;
3. sends the tokens, grouped by expert, to the ranks that hold the experts
   (:func:`~mmgem.models.layers.ep_all_to_all.all_to_all`), runs each local
   expert once on all the tokens it received, and sends the results back by
   the reverse exchange; both exchanges are differentiable (backward is the
   reverse exchange);
4. puts the outputs back in the input's order; the rest is as in
   :class:`MoEFFN`.

When the gathered counts show that no token has to leave its rank (e.g. with
:class:`~mmgem.datasets.samplers.ExpertLocalitySampler`), every rank skips
both exchanges, consistently, and nothing is moved. Forward outputs and
gradients equal those of :class:`MoEFFN` with the same (full) weights run on
each rank's batch.

Every rank of an expert-parallel group must run the same number of MoE
forward passes (the exchange is a collective), which MMEngine's loops and
samplers (equal batches per rank) guarantee.

Weights and checkpoints: expert tensors are initialised as the full ``M``
experts of a :class:`MoEFFN` and sliced, so a model built with the same seed
holds the same experts in both modes. :func:`convert_to_expert_parallel`
also makes the model's ``init_weights`` run on full-size expert tensors
(:func:`full_experts`): an initialiser that walks all parameters (DINO's
``xavier_uniform_`` over every decoder weight) then draws the same random
numbers as in a single process, so every expert, and every weight
initialised after them, starts as it would in one process, whatever the
world size. (:class:`~mmgem.engine.runner.GEMRunner`'s start-up broadcast
from rank 0 leaves the shards alone; mmengine's ``Runner`` would not.) A
state dict with all ``M`` experts
(saved in data-parallel mode, by one process, or gathered by
:class:`~mmgem.engine.hooks.ExpertParallelCheckpointHook`) loads into an
expert-parallel layer by keeping this rank's slice; the hook writes full
tensors, so checkpoints do not depend on the world size.

Use: ``model_wrapper_cfg=dict(type='GEMDistributedDataParallel',
expert_parallel=True)`` converts every :class:`MoEFFN` of the model in place
(:func:`convert_to_expert_parallel`) before DDP is set up, so model configs
stay unchanged; the layer can also be built directly with
``type='ExpertParallelMoEFFN'``. With one process (or
``expert_parallel_size=1``) it is a plain :class:`MoEFFN`.
"""
import functools
import types
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Tuple

import torch
from mmdet.registry import MODELS
from torch import Tensor, nn

from .batch_routing import BatchRouting
from .dispatch import capacity_keep_mask
from .ep_all_to_all import all_to_all, gather_count_matrix
from .ep_topology import ExpertParallelTopology, check_divisible, get_ep_topology
from .moe_ffn import MoEFFN

#: Names of the batched expert parameters of :class:`MoEFFN`.
EXPERT_PARAM_NAMES = ('w1', 'b1', 'w2', 'b2')
#: Attribute set on sharded expert parameters: the expert-parallel size.
EP_SIZE_ATTR = 'expert_parallel_size'


def is_expert_shard(param: Tensor) -> bool:
    """Whether ``param`` holds only some experts (expert parallel, E > 1).

    Args:
        param (Tensor): A parameter.

    Returns:
        bool: True for the expert tensors of an
        :class:`ExpertParallelMoEFFN` with expert-parallel size > 1.
    """
    return getattr(param, EP_SIZE_ATTR, 1) > 1


@MODELS.register_module()
class ExpertParallelMoEFFN(MoEFFN):
    """:class:`MoEFFN` whose experts are split over the ranks.

    Args:
        *args: Positional arguments of :class:`MoEFFN`.
        expert_parallel_size (int, optional): Ranks that share one full set
            of experts ``E``; must divide the world size and ``num_experts``.
            None uses the world size (each expert on exactly one rank).
        **kwargs: Keyword arguments of :class:`MoEFFN`.
    """

    def __init__(self,
                 *args,
                 expert_parallel_size: Optional[int] = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._shard(get_ep_topology(expert_parallel_size))

    @classmethod
    def convert(cls,
                module: MoEFFN,
                expert_parallel_size: Optional[int] = None
                ) -> 'ExpertParallelMoEFFN':
        """Turn a :class:`MoEFFN` into an expert-parallel one, in place.

        The module keeps its submodules, buffers and configuration; its
        expert tensors are replaced by this rank's slices.

        Args:
            module (MoEFFN): A layer holding all experts.
            expert_parallel_size (int, optional): See the class docstring.

        Returns:
            ExpertParallelMoEFFN: ``module`` itself, converted.
        """
        if isinstance(module, cls):
            return module
        if not isinstance(module, MoEFFN):
            raise TypeError(f'can only convert an MoEFFN, got '
                            f'{type(module).__name__}')
        topology = get_ep_topology(expert_parallel_size)
        module.__class__ = cls
        module._shard(topology)
        return module

    def _shard(self, topology: ExpertParallelTopology) -> None:
        """Keep only this rank's experts."""
        if self.owns_experts:
            raise NotImplementedError(
                f'{type(self.router).__name__} owns its experts (no batched expert '
                'weights to shard): expert parallelism is not supported')
        check_divisible(self.num_experts, topology.ep_size)
        local = topology.local_experts(self.num_experts)
        self.topology = topology
        self.local_expert_start = local.start
        self.num_local_experts = len(local)
        for name in EXPERT_PARAM_NAMES:
            full = getattr(self, name)
            shard = nn.Parameter(
                full.data[local.start:local.stop].clone(),
                requires_grad=full.requires_grad)
            setattr(shard, EP_SIZE_ATTR, topology.ep_size)
            setattr(self, name, shard)

    @property
    def is_sharded(self) -> bool:
        """bool: Whether this rank holds fewer than all experts."""
        return getattr(self, 'num_local_experts',
                       self.num_experts) < self.num_experts

    def expert_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        """Yield ``(name, parameter)`` of the expert tensors.

        Returns:
            Iterator[tuple[str, nn.Parameter]]: ``w1``, ``b1``, ``w2`` and
            ``b2`` with their (local) tensors.
        """
        for name in EXPERT_PARAM_NAMES:
            yield name, getattr(self, name)

    # ------------------------------------------------------------------
    # initialisation: as the full layer, then slice
    # ------------------------------------------------------------------
    def _init_as_full(self, init_fn: Callable) -> None:
        """Run a :class:`MoEFFN` initialiser on full tensors, keep a slice.

        Every rank draws the same random numbers as a layer holding all
        experts would, so an expert gets the same initial weights whatever
        the world size.
        """
        # a sharded layer has batched experts (owns_experts routers are refused)
        full = types.SimpleNamespace(num_experts=self.num_experts, owns_experts=False)
        start, stop = (self.local_expert_start,
                       self.local_expert_start + self.num_local_experts)
        with torch.no_grad():
            for name, param in self.expert_parameters():
                shape = (self.num_experts, ) + tuple(param.shape[1:])
                tensor = param.new_zeros(shape)
                # tensors the initialiser leaves alone keep their values
                tensor[start:stop] = param
                setattr(full, name, nn.Parameter(tensor, requires_grad=False))
            init_fn(full)
            for name, param in self.expert_parameters():
                param.copy_(getattr(full, name)[start:stop])

    def reset_parameters(self) -> None:
        """:meth:`MoEFFN.reset_parameters` of the full layer, sliced."""
        if not self.is_sharded:
            return super().reset_parameters()
        self._init_as_full(MoEFFN.reset_parameters)

    def xavier_init_experts(self) -> None:
        """:meth:`MoEFFN.xavier_init_experts` of the full layer, sliced."""
        if not self.is_sharded:
            return super().xavier_init_experts()
        self._init_as_full(MoEFFN.xavier_init_experts)

    # ------------------------------------------------------------------
    # checkpoints: full tensors load by slicing
    # ------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """Accept full ``(M, ...)`` expert tensors and keep this rank's
        slice; local ``(M / E, ...)`` shards load as they are."""
        if self.is_sharded:
            start, count = self.local_expert_start, self.num_local_experts
            for name, _ in self.expert_parameters():
                key = prefix + name
                value = state_dict.get(key)
                if value is None or value.dim() == 0:
                    continue
                if value.size(0) == self.num_experts:
                    state_dict[key] = value[start:start + count]
                elif value.size(0) != count:
                    error_msgs.append(
                        f'{key}: the checkpoint holds {value.size(0)} '
                        f'experts, the layer has {self.num_experts} experts '
                        f'({count} on this rank)')
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    # ------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------
    def forward(self,
                x: Tensor,
                identity: Optional[Tensor] = None,
                routing: Optional[BatchRouting] = None) -> Tensor:
        """:meth:`MoEFFN.forward`; the forward's ``routing`` is kept for
        :meth:`_dispatch_images` (values shared by the MoE layers).

        Args:
            x (Tensor): Tokens.
            identity (Tensor, optional): Residual.
            routing (BatchRouting, optional): The batch's routing.

        Returns:
            Tensor: As :meth:`MoEFFN.forward`.
        """
        self._batch_routing = routing
        try:
            return super().forward(x, identity, routing=routing)
        finally:
            self._batch_routing = None

    def _dispatch_images(self, x: Tensor, experts: Tensor) -> Tensor:
        """Send every image's tokens to the rank holding its expert and back.

        Routing, statistics and losses are :class:`MoEFFN`'s; only where the
        experts run differs. The images are grouped by expert (a sort of the
        ``B`` images, whose tokens are contiguous) and the split sizes come
        from :meth:`image_exchange`, so nothing is read from the device.
        """
        if not self.is_sharded:
            return super()._dispatch_images(x, experts)
        num_images, num_tokens, channels = x.shape
        plan = self.image_exchange(experts, num_tokens, x.device)
        rows = x.index_select(0, plan['order']).reshape(-1, channels)
        out = self._exchange(rows.to(self.exchange_dtype(x)), plan['tokens'])
        out = out.view(num_images, num_tokens, channels)
        return torch.empty_like(out).index_copy(0, plan['order'],
                                                out).to(x.dtype)

    def image_exchange(self, experts: Tensor, num_tokens: int,
                       device: torch.device) -> dict:
        """The exchange plan of a batch routed image by image (``'gem'``).

        Every rank's images per expert and tokens per image (which differ
        between ranks: DINO's denoising queries depend on the boxes of the
        batch) are all-gathered on the host, over the EP group's gloo twin,
        giving ``tokens[s, e]``, the tokens rank ``s`` of the EP group sends
        to expert ``e``. With the images' order by expert (on ``device``) it
        is kept in the current forward's ``BatchRouting.shared``, so the
        other MoE layers of the forward (same images, same queries) reuse it
        without a collective.

        Args:
            experts (Tensor): ``(B,)`` int64 planned expert of every image,
                on the host.
            num_tokens (int): Tokens per image on this rank.
            device (torch.device): Device of the tokens.

        Returns:
            dict: ``tokens`` (``(E, M)`` int64, host) and ``order``
            (``(B,)`` int64 on ``device``).
        """
        routing = getattr(self, '_batch_routing', None)
        topology = self.topology
        key = ('expert_parallel_images', topology.ep_size, self.num_experts,
               str(device))
        cached = None if routing is None else routing.shared.get(key)
        experts = experts.cpu()
        if cached is not None:
            if cached['num_tokens'] == num_tokens and (
                    cached['experts'] is experts
                    or torch.equal(cached['experts'], experts)):
                return cached
            raise RuntimeError(
                'the MoE layers of one forward were given different planned '
                'experts or token counts; expert parallelism exchanges the '
                'split sizes once per forward')
        counts = torch.bincount(experts, minlength=self.num_experts)
        group = topology.ep_host_group or topology.ep_group
        gathered = gather_count_matrix(
            torch.cat([counts, counts.new_tensor([num_tokens])]), group)
        tokens = gathered[:, :-1] * gathered[:, -1:]
        order = torch.argsort(experts, stable=True)
        if device.type == 'cuda':
            order = order.pin_memory()
        plan = dict(experts=experts, num_tokens=num_tokens, tokens=tokens,
                    order=order.to(device, non_blocking=True))
        if routing is not None:
            routing.shared[key] = plan
        return plan

    def _dispatch_tokens(self, tokens: Tensor, experts: Tensor, gates: Tensor,
                         capacity: int) -> Tuple[Tensor, Tensor]:
        """Capacity on this rank's tokens (as in data-parallel training); only
        the kept tokens travel to their experts' ranks."""
        if not self.is_sharded:
            return super()._dispatch_tokens(tokens, experts, gates, capacity)
        kept = capacity_keep_mask(experts, gates, self.num_experts, capacity,
                                  self.capacity_priority)
        kept_idx = kept.nonzero().squeeze(1)
        outs = self.exchange_apply(
            tokens.index_select(0, kept_idx), experts.index_select(0, kept_idx))
        gated = outs * gates.index_select(0, kept_idx).unsqueeze(1)
        return tokens.new_zeros(tokens.shape).index_copy(0, kept_idx, gated), kept

    def exchange_dtype(self, tokens: Tensor) -> torch.dtype:
        """The dtype the tokens travel and are computed in.

        Under autocast (for the tokens' device) the autocast dtype, else the
        experts' dtype, as Tutel does: every rank must send the same dtype
        into the same collective, and half precision halves the traffic.

        Args:
            tokens (Tensor): The tokens about to be exchanged.

        Returns:
            torch.dtype: The exchange dtype.
        """
        device_type = tokens.device.type
        try:
            enabled = torch.is_autocast_enabled(device_type)
        except TypeError:  # torch < 2.4: no device argument
            enabled = (torch.is_autocast_cpu_enabled() if device_type == 'cpu'
                       else torch.is_autocast_enabled())
        if not enabled:
            return self.w1.dtype
        try:
            return torch.get_autocast_dtype(device_type)
        except AttributeError:  # torch < 2.4
            return (torch.get_autocast_cpu_dtype() if device_type == 'cpu'
                    else torch.get_autocast_gpu_dtype())

    def exchange_apply(self, tokens: Tensor, token_experts: Tensor) -> Tensor:
        """Run every token through its expert, wherever the expert lives.

        A collective over the expert-parallel group: every rank of the group
        must call it once per MoE forward, even with no token. The split
        sizes are all-gathered on the tokens' device (the token-routed
        modes' experts come from the router, on the device).

        The tokens are cast to :meth:`exchange_dtype` before the first
        exchange, the experts' outputs to the same dtype before the second
        one (a local expert that received nothing, or an expert that computes
        in another dtype, cannot change what a rank sends), and the result
        back to the dtype of ``tokens``.

        Args:
            tokens (Tensor): ``(T, C)`` tokens of this rank.
            token_experts (Tensor): ``(T,)`` int64 global expert of each
                token.

        Returns:
            Tensor: ``(T, C)`` expert outputs, in the order of ``tokens``
            and in its dtype.
        """
        counts = torch.bincount(token_experts, minlength=self.num_experts)
        # matrix[s, e]: tokens rank s sends to expert e (gathered on the
        # tokens' device, as the backend needs, and read on the host)
        matrix = gather_count_matrix(counts.to(tokens.device),
                                     self.topology.ep_group).cpu()
        order = torch.argsort(token_experts, stable=True).to(tokens.device)
        rows = tokens.index_select(0, order).to(self.exchange_dtype(tokens))
        out = self._exchange(rows, matrix)
        return torch.empty_like(out).index_copy(0, order, out).to(tokens.dtype)

    def _exchange(self, rows: Tensor, matrix: Tensor) -> Tensor:
        """Exchange rows grouped by expert, run the local experts, return.

        Args:
            rows (Tensor): ``(T, C)`` rows of this rank, grouped by global
                expert in ascending order, in the exchange dtype.
            matrix (Tensor): ``(E, M)`` int64 host matrix: rows EP rank
                ``s`` sends to expert ``e`` (identical on every rank).

        Returns:
            Tensor: ``(T, C)`` expert outputs in the order of ``rows``.
        """
        topology = self.topology
        ep_size, count = topology.ep_size, self.num_local_experts
        me = topology.ep_rank
        per_rank = matrix.view(ep_size, ep_size, count).sum(dim=2)
        send = per_rank[me].tolist()
        recv = per_rank[:, me].tolist()
        moving = int(per_rank.sum()) != int(per_rank.diagonal().sum())
        dtype = rows.dtype
        if moving:
            received = all_to_all(rows, send, recv, topology.ep_group)
        else:
            received = rows
        # Received rows: by source rank, then by local expert.
        block_sizes = matrix[:, me * count:(me + 1) * count]
        chunks: List[Tensor] = list(
            received.split(block_sizes.flatten().tolist(), dim=0))
        weights = (self.w1.unbind(0), self.b1.unbind(0), self.w2.unbind(0),
                   self.b2.unbind(0))
        for local in range(count):
            idx = [s * count + local for s in range(ep_size)]
            sizes = [int(block_sizes[s, local]) for s in range(ep_size)]
            if sum(sizes) == 0:
                continue
            out = self._expert(weights, local,
                               torch.cat([chunks[i] for i in idx], dim=0))
            for i, piece in zip(idx, out.to(dtype).split(sizes, dim=0)):
                chunks[i] = piece
        processed = torch.cat(chunks, dim=0)
        if moving:
            return all_to_all(processed, recv, send, topology.ep_group)
        return processed

    def extra_repr(self) -> str:
        rep = super().extra_repr()
        if self.is_sharded:
            stop = self.local_expert_start + self.num_local_experts
            rep += (f', expert_parallel_size={self.topology.ep_size}, '
                    f'local_experts=[{self.local_expert_start}, {stop})')
        return rep


@contextmanager
def full_experts(model: nn.Module):
    """Let the sharded expert tensors of ``model`` hold all ``M`` experts.

    Inside the context every sharded :class:`ExpertParallelMoEFFN` of
    ``model`` holds ``(M, ...)`` tensors (this rank's experts in their
    slots, zeros elsewhere) and behaves as a full layer; on exit it keeps
    its slice of whatever the tensors then hold. The parameter objects stay
    the same (only their data changes), so an optimizer built on them stays
    valid; use it before training, e.g. around ``init_weights``.

    Args:
        model (nn.Module): A model with expert-parallel layers.

    Yields:
        nn.Module: ``model``.
    """
    layers = [m for m in model.modules()
              if isinstance(m, ExpertParallelMoEFFN) and m.is_sharded]
    with torch.no_grad():
        for layer in layers:
            start, stop = (layer.local_expert_start,
                           layer.local_expert_start + layer.num_local_experts)
            for _, param in layer.expert_parameters():
                full = param.data.new_zeros((layer.num_experts, ) +
                                            tuple(param.shape[1:]))
                full[start:stop] = param.data
                param.data = full
            layer._local_range = (start, stop)
            layer.num_local_experts = layer.num_experts
    try:
        yield model
    finally:
        with torch.no_grad():
            for layer in layers:
                start, stop = layer._local_range
                del layer._local_range
                layer.num_local_experts = stop - start
                for _, param in layer.expert_parameters():
                    param.data = param.data[start:stop].clone()


def convert_to_expert_parallel(model: nn.Module,
                               expert_parallel_size: Optional[int] = None
                               ) -> List[str]:
    """Convert every :class:`MoEFFN` of ``model`` to expert parallel.

    Must run on every rank, in the same order (it may create process
    groups), before the model is wrapped by DDP. When ``model`` itself is
    converted it is returned as it is; otherwise its ``init_weights`` (if
    any) is made to run inside :func:`full_experts`.

    Args:
        model (nn.Module): A model holding :class:`MoEFFN` layers.
        expert_parallel_size (int, optional): Ranks sharing one full set of
            experts; None uses the world size.

    Returns:
        list[str]: Names of the converted layers.
    """
    converted = []
    for name, module in model.named_modules():
        if isinstance(module, MoEFFN) and not isinstance(
                module, ExpertParallelMoEFFN):
            ExpertParallelMoEFFN.convert(module, expert_parallel_size)
            converted.append(name)
    init_weights = getattr(model, 'init_weights', None)
    if (converted and converted != [''] and callable(init_weights)
            and not getattr(init_weights, '_full_experts', False)):

        @functools.wraps(init_weights)
        def init_with_full_experts(*args, **kwargs):
            with full_experts(model):
                return init_weights(*args, **kwargs)

        init_with_full_experts._full_experts = True
        model.init_weights = init_with_full_experts
    return converted
