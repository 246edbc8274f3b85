"""Start the server:

python -m serving --model <folder or MLflow URI> --host 127.0.0.1 --port 8000
"""

import argparse
import sys

import uvicorn
from pydantic import ValidationError

from distrinews.errors import ModelFolderError
from distrinews.runtime.prediction_store import LogUnavailable, open_store
from serving.app import create_app, load_served_model
from serving.settings import Settings, settings_error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help="exported model folder or MLflow URI (else $DISTRINEWS_MODEL)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        # --model wins over DISTRINEWS_MODEL; every other setting comes from the environment.
        settings = Settings(**({"model": args.model} if args.model else {}))
    except ValidationError as err:  # a bad DISTRINEWS_* value
        print(f"error: {' '.join(settings_error(err).split())}", file=sys.stderr)
        return 2
    try:
        # Here rather than in the app's start-up (which also runs before the port
        # opens): a bad model or log store is then one error line, not a traceback.
        model = load_served_model(settings)
        store = open_store(settings.prediction_log) if settings.prediction_log else None
    except (ModelFolderError, LogUnavailable) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    # uvicorn's own access log is off: the app writes one JSON line per request.
    app = create_app(settings, model, store)
    # The app owns it now: held here while the server runs, it would outlive the
    # first reload (its ONNX Runtime session, arena and threads).
    del model
    config = uvicorn.Config(app, host=args.host, port=args.port, access_log=False)
    server = uvicorn.Server(config)
    server.run()
    # uvicorn returns normally when start-up failed.
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
