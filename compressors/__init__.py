"""Compression methods. Importing this package registers every implemented method.

``get_compressor(method)`` returns the method's Compressor; ``available_methods()`` lists them.
"""

from compressors import hos, legr, lfb, lma, ns, sfp  # noqa: F401  (each module registers its method)
from compressors.base import (BaseCompressor, CompressionContext, Compressor, available_methods,
                              get_compressor, register)

__all__ = ["BaseCompressor", "CompressionContext", "Compressor", "available_methods", "get_compressor", "register"]
