"""automc: automated model compression as a Gymnasium environment and benchmark.

``import automc_env`` registers the environment ``AutoMC-v0``::

    import gymnasium, automc_env
    env = gymnasium.make("AutoMC-v0", task="digits")
"""

import gymnasium

ENV_ID = "AutoMC-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="automc_env.env:AutoMCEnv")

__all__ = ["ENV_ID"]
