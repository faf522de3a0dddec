"""Reward models, in one package (DeepSeekMath Sec. 4.1.2-4.1.4): what they are, what they learn,
how they reward a policy and how a stage trains them.

* :mod:`~rlzoo.reward_models.steps`   reasoning steps: named step rules, step ends on tokens
* :mod:`~rlzoo.reward_models.model`   the network (a causal LM backbone with a scalar head), its
  scores, losses (binary cross-entropy) and metrics (AUC, step and first-error accuracy)
* :mod:`~rlzoo.reward_models.labels`  what it learns: outcome labels, Math-Shepherd step labels,
  and a task's exact step oracle where the task has one (the embedded task's ``step_oracle``)
* :mod:`~rlzoo.reward_models.reward`  the rewards ``orm`` and ``prm`` a policy stage trains on
* :mod:`~rlzoo.reward_models.stage`   a reward-model stage's data, loss, step and held-out metrics
  (the stage is driven by :mod:`rlzoo.run.reward_model_stage`, like a policy stage)

Importing the package imports none of them (and no torch).
"""
