"""The only code that knows MLflow: the tracking store, run logging, redaction, the registry
and the pyfunc model. ``mlflow`` is imported inside functions: the package imports without it."""
