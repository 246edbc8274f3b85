"""Time a model on this CPU as the server runs it: batch-1 p50 and p95, and the CPU.

Latency belongs to a CPU: the same int8 model answers in 3-7 ms on one and 20-30 on
another. Run this where the model will serve (inside the image, on the Space's
hardware) to see whether it fits a budget there:

    python -m serving.measure --model models:/distrinews@champion --max-p95-ms 15

The texts have the token counts of the model's reference profile (its validation split):
the time of a forward pass depends on how many tokens it has, not on which. `--texts`
times a file of your own texts instead (one per line).
"""

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from distrinews.errors import ModelFolderError
from distrinews.runtime.cpu import available_cpus, cpu_name
from distrinews.runtime.reference_profile import read_profile
from distrinews.runtime.scoring import batch1_latency_ms, percentile
from serving.app import load_served_model
from serving.inference import texts_like
from serving.settings import Settings, settings_error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.measure", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", help="model folder or MLflow URI (else $DISTRINEWS_MODEL)")
    parser.add_argument("--texts", help="a file of texts to time, one per line")
    parser.add_argument("--count", type=int, default=200, help="texts timed, after 10 warm-up")
    parser.add_argument("--max-p95-ms", type=float, help="exit 1 if the p95 is over this")
    args = parser.parse_args(argv)
    try:
        loaded = load_served_model(Settings(**({"model": args.model} if args.model else {})))
    except ValidationError as err:  # a bad DISTRINEWS_* value: never its value (secrets)
        print(f"error: {' '.join(settings_error(err).split())}", file=sys.stderr)
        return 2
    except (ModelFolderError, ValueError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    if args.texts:
        texts = [t for t in Path(args.texts).read_text().splitlines() if t.strip()][: args.count]
    else:
        texts = texts_like(read_profile(loaded.classifier.folder), args.count)
    predict = loaded.classifier.logits
    batch1_latency_ms(predict, texts[:10])
    timings = batch1_latency_ms(predict, texts)
    result = {
        "model": loaded.source.uri,
        "cpu": f"{cpu_name()}, {available_cpus()} vCPUs",
        "texts": len(texts),
        "p50_ms": round(percentile(timings, 50), 2),
        "p95_ms": round(percentile(timings, 95), 2),
    }
    loaded.retire()
    print(json.dumps(result))
    if args.max_p95_ms is not None and result["p95_ms"] > args.max_p95_ms:
        print(
            f"error: p95 {result['p95_ms']} ms is over {args.max_p95_ms:g} ms on this CPU",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
