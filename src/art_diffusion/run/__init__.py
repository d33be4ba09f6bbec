"""Running training under Hydra: ``train.train(cfg)`` (``prepare_config`` then ``fit_and_test``), a sweep job around it
(``job.run_job``), the rules every config value obeys (``validate``), precision, CPU memory reuse (``memory``),
hyperparameter logging, the config tree, the config resolvers and the command line's checks (``cli``); ``sweeps/``
(what a sweep varies, its summary) and ``cluster/`` (DDP ranks that join their job's run dir, SLURM requeue).
Resuming a run is in :mod:`art_diffusion.checkpoints.resume`.

Nothing is imported here: the sweep summary and the resolvers are loaded while Hydra composes, and must not pull
in all of training with them.
"""
