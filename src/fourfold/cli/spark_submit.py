"""``fourfold batch`` run by ``spark-submit``: the session is spark-submit's (its ``--master``, ``--conf``,
``--executor-memory`` ...), the job and its arguments are the CLI's, on the Spark engine.

    spark-submit --master spark://host:7077 --executor-memory 2g \\
        "$(python -m fourfold.cli.spark_submit)" \\
        models:/churn/production -i /shared/users/ -o /shared/scores/ --id-cols user_id

Run as a module it prints its own path (the file spark-submit is given); run by spark-submit it starts
the session, runs ``fourfold batch ARGS --engine spark`` on it (``--spark-master`` is spark-submit's
``--master``: leave it out), stops the session and exits with the CLI's exit code.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[
        0
    ]  # run as a script: this directory's modules (batch.py, serve.py ...) must not shadow others

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Run ``fourfold batch`` with ``argv`` on spark-submit's session; the exit code."""
    from fourfold.batch.spark_session import submitted_session
    from fourfold.cli.main import app
    from fourfold.errors import FourfoldError

    try:
        spark = submitted_session()
    except FourfoldError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    try:
        app(["batch", *argv, *([] if "--engine" in argv else ["--engine", "spark"])])
    except SystemExit as exc:  # typer ends every run with one (0 when committed)
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    if __spec__ is not None and __spec__.name == "fourfold.cli.spark_submit":  # python -m: where am I
        print(__file__)
    else:  # spark-submit runs this file as a script
        sys.exit(main(sys.argv[1:]))
