"""Start the server:

python -m serving --model <folder or MLflow URI> --host 127.0.0.1 --port 8000
"""

import argparse
import os
import sys

import uvicorn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help="exported model folder or MLflow URI (else $DISTRINEWS_MODEL)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if args.model:
        os.environ["DISTRINEWS_MODEL"] = args.model
    from serving.settings import Settings

    try:
        settings = Settings()
    except ValueError as err:  # a bad DISTRINEWS_* value
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    # Imported only now: serving.app builds its module-level app from the
    # environment, which must have been checked first.
    from serving.app import create_app

    config = uvicorn.Config(
        create_app(settings), host=args.host, port=args.port, access_log=settings.access_log
    )
    server = uvicorn.Server(config)
    server.run()
    # uvicorn returns normally when start-up (model loading) failed.
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
