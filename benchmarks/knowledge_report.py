"""Quality of the strategy embeddings (Algorithm 1): link prediction, NN_exp held-out error, PCA plot.

Usage: python benchmarks/knowledge_report.py [--grid paper] [--epochs 200] [--folds 5] [--out pca.png]
       (same as ``automc knowledge report``; trains Algorithm 1 folds + 2 times, caches the main build)
"""

from __future__ import annotations

import sys

from knowledge.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
