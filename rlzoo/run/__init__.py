"""Running things: the top layer of rlzoo, on the runtime and the rewards below it.

* :mod:`~rlzoo.run.factories`          the task, the first model, each stage's algorithm, reward,
  question stream and base weights, built from the config
* :mod:`~rlzoo.run.validate`           everything checked before any work (one line per mistake)
* :mod:`~rlzoo.run.loop`               the run context, the one step loop both stage kinds train
  through (logging, stop rules, checkpoints, stop requests) and the one final-folder writer
* :mod:`~rlzoo.run.policy_stage`       a policy stage (an algorithm through the runtime)
* :mod:`~rlzoo.run.reward_model_stage` a reward-model stage (label, train, measure)
* :mod:`~rlzoo.run.evaluation`         held-out greedy accuracy, Pass@k and Maj@k
* :mod:`~rlzoo.run.compare`            ``rlzoo compare``: methods from one SFT checkpoint over seeds

The run loop itself is :mod:`rlzoo.train`; the command line, :mod:`rlzoo.cli`.
"""
