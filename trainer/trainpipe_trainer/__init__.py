"""trainpipe's data plane: data, models, the training engine and its Ray Train entry point.

Importing this package is cheap: torch is imported only by the modules that
train (``engine``, ``data``, ``models``), never by ``contract``, which the
control plane shares.
"""

__version__ = "0.1.0"
