"""Compression knowledge: the knowledge graph over the strategy space and strategy embeddings."""
