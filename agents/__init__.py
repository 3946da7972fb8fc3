"""Search agents that act on AutoMC-v0 (progressive AutoMC agent, RL, evolution, random)."""
