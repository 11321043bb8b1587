"""Data access: settings, sources, the query catalog, the payload parser, demo data and the MLflow registry."""

import os

# MLflow 3 reports usage off the machine and draws progress bars on stderr unless told not to.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
