"""The pipeline's stages, one module each, declared by a row of :mod:`dyn_adapter.stage_table`.

A stage module has ``run(params, <inputs>, out_dir, <options>) -> Result`` (its row names the
keywords), ``describe(result, out_dir) -> str`` (the command's one result line) and, if it
writes a Markdown report for people, ``report(result, out_dir) -> (path, title)``. The CLI,
``dvc.yaml`` (through the CLI) and the KFP components call exactly these functions.
"""
