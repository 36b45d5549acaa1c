"""Optimizers and learning-rate schedules, configured in one dialect (``model.optimizer``).

* :mod:`glimpse.optim.settings`: the ``model.optimizer`` mapping every task reads, checked
  once, and the AdamW or LARS it builds;
* :mod:`glimpse.optim.param_groups`: which parameters are weight-decayed;
* :mod:`glimpse.optim.schedules`: the warm-up + cosine learning-rate schedule and the linear
  scaling rule;
* :mod:`glimpse.optim.lars`: LARS, as BYOL trains with it.
"""
