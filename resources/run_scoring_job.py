"""Entry point of the Databricks Job: `python_file` of a Python script task, arguments as for `python -m jobs.score`.

A script task runs this file by path, so the repository root is not importable by itself; put it first on
sys.path, then run the scoring job with Spark as the engine (executors get the code from the job itself).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.score import main  # importable only after the line above

if __name__ == "__main__":
    sys.exit(main(["--engine", "spark", *sys.argv[1:]]))
