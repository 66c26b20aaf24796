# Copyright (c) mmgem contributors. All rights reserved.
"""mmengine's Runner with safe checkpoint loading, for mmgem's configs.

``runner_type = 'GEMRunner'`` (set by mmgem's configs; mmdet's
``tools/train.py`` and ``tools/test.py`` build it through mmengine's root
``RUNNERS``, before any default scope is set, so it is registered there)
changes three things of :class:`mmengine.runner.Runner`:

- ``load_from`` and ``resume`` read local checkpoints with
  ``weights_only=True`` and an allow-list
  (:func:`~mmgem.engine.runner.checkpoint_loading.load_checkpoint_file`); a
  file whose pickle wants anything else is refused with an error naming the
  file and the global. ``unsafe_load_checkpoints=[path, ...]`` in the config
  names the files the user trusts to be unpickled with
  ``weights_only=False`` (their pickle can run any code).
- Auto-resume (``resume=True`` without ``load_from``; ``--resume`` without a
  file) falls back to the newest complete ``iter_*.pth`` / ``epoch_*.pth``
  when the one named in ``last_checkpoint`` is truncated or unreadable, and
  says so.
- The start-up broadcast of ``_init_model_weights`` leaves out the tensors
  the model lists in ``_ddp_params_and_buffers_to_ignore``: the per-rank
  expert shards of expert parallelism
  (:class:`~mmgem.engine.wrappers.GEMDistributedDataParallel` sets the list),
  which DDP leaves out of its own broadcast too.
- A data loader it builds whose sampler takes a GEM plan
  (:class:`~mmgem.datasets.samplers.ExpertLocalitySampler`) gets the plan
  the model already has (``model.plan_file``) when it is built, before the
  training loop can ask it for indices (``IterBasedTrainLoop`` with workers
  does so when it is built, before any hook runs);
  ``ExpertParallelExchangeHook`` hands it the plan again in
  ``before_train``, after ``GEMPlannerHook`` made or restored it.

With ``MMGEM_PURE_PYTORCH_OPS=1`` in the environment it also switches DINO's
CUDA ops to PyTorch code (:mod:`.pure_pytorch_ops`).
"""
from typing import Callable, Iterable, Optional, Union

from mmengine.dist import broadcast
from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model
from torch.utils.data import DataLoader

from ..hooks.expert_parallel_exchange_hook import give_plan_to_sampler
from .checkpoint_loading import find_latest_complete_checkpoint, load_checkpoint_file
from .pure_pytorch_ops import pure_pytorch_ops_requested, use_pure_pytorch_ops


@RUNNERS.register_module()
class GEMRunner(Runner):
    """Runner that loads checkpoints safely (see the module docstring).

    Args:
        *args, **kwargs: Those of :class:`mmengine.runner.Runner`.
        unsafe_load_checkpoints (Iterable[str]): Checkpoint files to load
            with ``weights_only=False``: only files you trust, their pickle
            can run arbitrary code. Defaults to none.
    """

    def __init__(self, *args, unsafe_load_checkpoints: Iterable[str] = (),
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.unsafe_load_checkpoints = list(unsafe_load_checkpoints or ())
        if pure_pytorch_ops_requested():
            use_pure_pytorch_ops()

    @classmethod
    def from_cfg(cls, cfg) -> 'GEMRunner':
        """Build the runner from a config (``unsafe_load_checkpoints`` too).

        Args:
            cfg (ConfigType): The config.

        Returns:
            GEMRunner: The runner.
        """
        runner = super().from_cfg(cfg)
        runner.unsafe_load_checkpoints = list(cfg.get('unsafe_load_checkpoints') or ())
        return runner

    def build_dataloader(self,
                         dataloader: Union[DataLoader, dict],
                         seed: Optional[int] = None,
                         diff_rank_seed: bool = False) -> DataLoader:
        """mmengine's ``build_dataloader``, then the model's plan to its
        plan sampler, if both exist (see the module docstring).

        An instance method here (mmengine's is static, and mmengine's loops
        call it on the runner); call ``Runner.build_dataloader`` to build a
        loader without a runner.

        Args:
            dataloader (DataLoader | dict): The loader or its config.
            seed (int, optional): As mmengine's.
            diff_rank_seed (bool): As mmengine's.

        Returns:
            DataLoader: The loader.
        """
        loader = Runner.build_dataloader(dataloader, seed=seed,
                                         diff_rank_seed=diff_rank_seed)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        has_plan = getattr(model, 'has_plan', None)
        if callable(has_plan) and has_plan():
            give_plan_to_sampler(model, loader)
        return loader

    def _init_model_weights(self) -> None:
        """``init_weights``, then broadcast from rank 0 what ranks share.

        As mmengine's, except that the tensors listed in the model's
        ``_ddp_params_and_buffers_to_ignore`` (per-rank expert shards) are
        not broadcast.
        """
        model = self.model.module if is_model_wrapper(self.model) else self.model
        if hasattr(model, 'init_weights'):
            model.init_weights()
            ignored = set(getattr(model, '_ddp_params_and_buffers_to_ignore', ()))
            for name, params in model.state_dict().items():
                if name not in ignored:
                    broadcast(params)

    def load_or_resume(self) -> None:
        """Load or resume; auto-resume skips an incomplete last checkpoint."""
        if self._has_loaded:
            return None
        resume_from: Optional[str] = None
        if self._resume and self._load_from is None:
            resume_from = find_latest_complete_checkpoint(self.work_dir)
            self.logger.info(f'Auto resumed from the latest checkpoint {resume_from}.')
        elif self._resume and self._load_from is not None:
            resume_from = self._load_from
        if resume_from is not None:
            self.resume(resume_from)
            self._has_loaded = True
        elif self._load_from is not None:
            self.load_checkpoint(self._load_from)
            self._has_loaded = True

    def load_checkpoint(self,
                        filename: str,
                        map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]) -> dict:
        """mmengine's ``load_checkpoint`` through the safe loader.

        Args:
            filename (str): Local path or URL of the checkpoint.
            map_location (str | callable): As for :func:`torch.load`.
            strict (bool): Whether the keys must match exactly.
            revise_keys (list): ``(pattern, replacement)`` pairs applied to
                the state-dict keys.

        Returns:
            dict: The checkpoint.
        """
        checkpoint = load_checkpoint_file(
            filename, map_location=map_location,
            unsafe_files=getattr(self, 'unsafe_load_checkpoints', ()))
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        checkpoint = _load_checkpoint_to_model(model, checkpoint, strict, revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint


def build_runner(cfg) -> Runner:
    """Build the runner a config names, as mmdet's ``tools/train.py`` does.

    Args:
        cfg (Config): The config.

    Returns:
        Runner: ``RUNNERS.build(cfg)`` when the config has ``runner_type``
        (mmgem's configs: :class:`GEMRunner`), else ``Runner.from_cfg(cfg)``.
    """
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
