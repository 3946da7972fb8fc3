"""automc: automated model compression as a Gymnasium environment and benchmark.

``import automc_env`` registers the environment ``AutoMC-v0``::

    import gymnasium, automc_env
    env = gymnasium.make("AutoMC-v0", task="digits")
    envs = gymnasium.make_vec("AutoMC-v0", num_envs=2, vectorization_mode="async", task="digits")

    fast = gymnasium.make_vec("AutoMC-v0", num_envs=1024, task="digits", backend="surrogate")

On the live backend ``make_vec`` builds ``"sync"`` (the default) or ``"async"`` vector environments:
each sub-environment is built by ``gymnasium.make`` in the process that runs it (the cloudpickled
factory carries the spec, not an environment), so nothing about the environment has to pickle, and
the sub-environments share the evaluation store (SQLite WAL, atomic checkpoint writes); every step
is a real compression, batching would gain nothing. On the ``table`` and ``surrogate`` backends the
default (``vector_entry_point``) is :class:`automc_env.vector.AutoMCVectorEnv`, which steps all
sub-environments as arrays.
"""

import os
import platform

# One CPU code path for every x86 machine, set before torch loads its kernels: PyTorch, oneDNN and MKL
# otherwise pick AVX-512 or AVX2 kernels by CPU, whose sums round differently, so the same step would
# give other numbers on another machine. AVX2 is what every x86 machine of the last decade runs; a
# variable the user sets wins (at the price of numbers that differ from the released ones).
if platform.machine().lower() in ("x86_64", "amd64"):
    for _name, _value in (("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2"), ("MKL_CBWR", "AVX2")):
        os.environ.setdefault(_name, _value)

import gymnasium  # noqa: E402

ENV_ID = "AutoMC-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="automc_env.env:AutoMCEnv",
                       vector_entry_point="automc_env.vector:make_vector")

__all__ = ["ENV_ID"]
