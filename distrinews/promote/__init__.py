"""Stage `promote` (`mlflow run . -e promote`): the gate that moves the `champion` alias.
The decision on paired evidence (`gate`), the interval and test it decides on
(`comparison`), its registry reads and writes with the alias last (`registry`), and what an
exported version says about itself (`evidence`).

May import: `data`, the shared modules, `runtime`. No torch (a test proves it).
"""
