"""The registered pyfunc model carries its own copy of the runtime: it must import and
classify where `distrinews` is not installed (an environment built from the model's own
requirements)."""

import subprocess
import sys

from distrinews.runtime.pyfunc import runtime_package

#: Drops this checkout's editable install (its import hook and its folder), so the only
#: `distrinews` left is the model's copy; then classifies one text with it.
STANDALONE = """
import sys
copy, model = sys.argv[1:]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
sys.path[:] = [copy] + [p for p in sys.path if p]
import distrinews
assert distrinews.__file__.startswith(copy), distrinews.__file__
from distrinews.runtime import model_source
from distrinews.runtime.onnx_classifier import OnnxClassifier
classifier = OnnxClassifier(model)
print(classifier.labels[classifier.probabilities(["Stocks fell today"])[0].argmax()])
"""


def test_the_model_s_copy_of_the_runtime_imports_and_classifies_on_its_own(tmp_path, tiny_onnx):
    copy = runtime_package(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", STANDALONE, str(copy.parent), str(tiny_onnx)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() in ("World", "Sports", "Business", "Sci/Tech")
