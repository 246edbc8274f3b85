"""Stage `data`: the rows every other stage reads. The data's splits and their class names
(`splits`, `labels`), labelled production feedback as training rows and the held-out
production slice (`feedback`), and the prediction log's time window (`time_window`).

May import: the shared modules (config, errors, run_names, ...) and `runtime`. No torch.
"""
