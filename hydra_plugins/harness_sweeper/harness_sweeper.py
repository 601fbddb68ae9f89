"""The harness's sweeper: Hydra's basic grid, expanded once and validated before anything runs.

Hydra finds sweepers in the `hydra_plugins` namespace package through its public plugin API;
conf/config.yaml selects this one (`override hydra/sweeper: harness`). It launches exactly
the jobs `harness.plan.planned_jobs` lists, the same expansion (and order) as Hydra's basic
sweeper: the cartesian product of `hydra.sweeper.params` and the command line's
comma-separated values. Every job's settings were checked by the harness's callback
(harness/callbacks.py) before the sweep folder exists, so it does not compose each job's whole
config a second time to check it (Hydra's basic sweeper does: 0.2 s a job on 2 cores, as much
as the launch's own composition).

On a terminal, the launch runs under a progress bar (harness/progress.py) when the jobs run in
this process (Hydra's basic launcher), which HarnessCallback.on_job_end advances as each job
ends. The jobs are still launched in one call, so their numbering, folders and Hydra's own log
lines are what they are without the bar; parallel launchers (joblib, submitit) get no bar, as
their jobs end in other processes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

# Its config node (`hydra/sweeper: harness`) is stored by harness/plan.py, which every
# composition of the harness's config imports: Hydra's compose API does not scan plugins.


class HarnessSweeper(Sweeper):
    def __init__(self, params: Optional[Dict[str, str]] = None) -> None:
        self.params = dict(params or {})
        self.config: Optional[DictConfig] = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: List[str]) -> Any:
        # the harness only once a sweep runs
        from harness import progress
        from harness.callbacks import SWEEP_START_ENV, sweep_weights
        from harness.launchers import in_process
        from harness.plan import planned_jobs
        from harness.vocabulary import SWEEP_FILE

        assert self.config is not None and self.launcher is not None
        jobs = planned_jobs(self.params, arguments)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / SWEEP_FILE)  # what was asked, for the record
        start = os.environ.get(SWEEP_START_ENV)
        with progress.sweep_bar(
            sweep_weights(len(jobs)),
            disable=None if in_process(self.config) else True,  # None: on a terminal only
            start=float(start) if start else None,
        ):
            results = self.launcher.launch(jobs, initial_job_idx=0)
        for r in results:
            _ = r.return_value  # re-raises a job's exception
        return [results]
