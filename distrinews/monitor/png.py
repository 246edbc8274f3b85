"""The monitor's charts as PNG: matplotlib without a display, a figure as PNG bytes (inlined
in the HTML report), and those bytes as the image mlflow.log_image takes. matplotlib
loads on the first chart, so a step that fails on its settings answers before it loads."""

import io


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display where the steps run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    pyplot().close(fig)
    return buffer.getvalue()


def png_image(png: bytes):
    """A PNG as the PIL image mlflow.log_image takes."""
    from PIL import Image

    return Image.open(io.BytesIO(png))
