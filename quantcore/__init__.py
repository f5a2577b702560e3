"""quantcore: post-training weight quantization, its theory and its measurements (pure NumPy).

No web framework, task queue or database is imported here: the service and the CLI call in.
"""

__version__ = "0.1.0"
