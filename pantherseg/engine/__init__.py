"""The ensemble engine: from a read image to tumour probabilities, within the time budget.

The data flow, one module a step:

- ``members``, ``checkpoint``, ``architectures``: find and validate each member, build its network from
  ``plans.json`` (allow-listed U-Nets only) and load its checkpoint safely;
- ``runtime`` (with ``onnx_backend``, ``openvino_backend``, ``cpu_quota``): device, precision, backend
  and thread count;
- ``preprocessing``: nnU-Net's own preprocessing, once per preprocessing group;
- ``sliding_window``: tiles, Gaussian weighting, batching, early stop;
- ``resampling``, ``to_image_space``: logits back to the image grid, as nnU-Net's export does;
- ``ensemble``: members in priority order, the time budget (``deadline``); ``weighted_mean``: the shared
  preprocessed inputs and the running weighted mean;
- ``memory_estimate``: will this prediction fit in the memory left (checked before predicting).

The engine reads images only through ``pantherseg.io`` and never imports the API or the entry points.
"""
