"""automc: automated model compression as a Gymnasium environment and benchmark.

``import automc_env`` registers the environment ``AutoMC-v0``::

    import gymnasium, automc_env
    env = gymnasium.make("AutoMC-v0", task="digits")
    envs = gymnasium.make_vec("AutoMC-v0", num_envs=2, vectorization_mode="async", task="digits")

The string entry point is all gymnasium 1.4's ``make_vec`` needs for ``"sync"`` and ``"async"``: each
sub-environment is built by ``gymnasium.make`` in the process that runs it (the cloudpickled factory
carries the spec, not an environment), so nothing about the environment has to pickle, and the
sub-environments share the evaluation store (SQLite WAL, atomic checkpoint writes). No
``vector_entry_point``: a natively batched AutoMC would gain nothing, every step is a real
compression.
"""

import gymnasium

ENV_ID = "AutoMC-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="automc_env.env:AutoMCEnv")

__all__ = ["ENV_ID"]
