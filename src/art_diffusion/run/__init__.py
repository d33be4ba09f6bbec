"""Running training under Hydra: ``train.train(cfg)``, a sweep job around it (``job.run_job``), resume in place,
hyperparameter logging, DDP ranks that join their job's run dir, the sweep summary, and the config resolvers.

Nothing is imported here: the sweep summary and the resolvers are loaded while Hydra composes, and must not pull
in all of training with them.
"""
