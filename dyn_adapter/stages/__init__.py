"""The pipeline's stages, one module each: ``run(params, inputs..., out) -> Result``.

The CLI, ``dvc.yaml`` (through the CLI) and the KFP components call exactly these functions.
"""
