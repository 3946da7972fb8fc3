"""Compression methods. Importing this package registers every implemented method.

``get_compressor(method)`` returns the method's Compressor; ``available_methods()`` lists them.
"""

from compressors import ns  # noqa: F401  (registers NS)
from compressors.base import (BaseCompressor, CompressionContext, Compressor, available_methods,
                              get_compressor, register)

__all__ = ["BaseCompressor", "CompressionContext", "Compressor", "available_methods", "get_compressor", "register"]
