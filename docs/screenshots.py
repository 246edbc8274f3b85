"""Screenshots of the MLflow UI for the README, taken in a real headless Chromium.

    python docs/screenshots.py                 # trains three short runs first (~9 min on 2 vCPUs)
    python docs/screenshots.py --store DIR     # reuse the runs a previous call left in DIR
    python docs/screenshots.py --page FOLDER   # only docs/page.png: the server's page at /

Trains three short runs of the default MiniLM that differ in learning rate
(`mlflow run . -e train`, as the README does, in the experiment
`distrinews`), evaluates and exports the first, starts `mlflow ui` on
127.0.0.1, and saves the runs table, the chart view, the compare view of the
runs and the logged model's page as PNGs in docs/. Needs Debian's
`chromium` and `chromium-driver` (`apt-get install chromium chromium-driver`)
and the dev extra (selenium).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import mlflow

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from devkit.servers import LocalServer, Server, headless_chromium  # noqa: E402
from distrinews.config import TrackingConfig  # noqa: E402

EXPERIMENT = TrackingConfig.experiment
#: Three short runs that differ in one setting, as a user comparing them would train.
RUNS = ({"lr": "1e-4"}, {"lr": "2e-4"}, {"lr": "3e-4"})
COMMON = {"nproc": "2", "max_train_rows": "2000", "max_eval_rows": "600", "epochs": "2"}


def mlflow_run(entry: str, params: dict[str, str], store: Path, env: dict[str, str]) -> None:
    """`mlflow run . -e <entry>` as the README gives it, in the store's folder."""
    command = ["mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local"]
    command += ["--experiment-name", EXPERIMENT]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    print("+", " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, cwd=store, env=env, check=True, timeout=1800)


def make_runs(store: Path, data: str, env: dict[str, str]) -> None:
    for i, change in enumerate(RUNS):
        params = COMMON | change | {"data": data, "output_dir": str(store / f"checkpoints-{i}")}
        mlflow_run("train", params, store, env)
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(EXPERIMENT)
    first = client.search_runs([experiment.experiment_id], order_by=["start_time ASC"])[0]
    evaluate = {"run_id": first.info.run_id, "data": data, "max_eval_rows": COMMON["max_eval_rows"]}
    mlflow_run("evaluate", evaluate, store, env)
    mlflow_run("export", evaluate | {"latency_texts": "100"}, store, env)


def wait_for_text(driver, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in driver.find_element("tag name", "body").text:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{driver.current_url} never showed {text!r}")
        time.sleep(0.5)


@dataclass
class Page:
    """A screenshot: where, what to wait for, and what to do before taking it."""

    file: str
    url: str
    wait_for: str
    search: tuple[str, str] | None = None  # (placeholder of a search box, text to type)
    click: str | None = None  # the element showing this text is clicked
    scroll_to: str | None = None  # then the element showing this text is scrolled to the top
    height: int = 1000  # window height


def scroll_to(driver, text: str) -> None:
    """Scroll the element showing `text` to the top of the window, and let it render."""
    target = driver.find_element("xpath", f"//*[text()='{text}']")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", target)
    time.sleep(1)


def shoot(driver, page: Page, settle: float = 3.0) -> None:
    driver.set_window_size(1700, page.height)
    driver.get("about:blank")  # a fresh page: a changed #fragment alone would not reload it
    driver.get(page.url)
    wait_for_text(driver, page.wait_for)
    for button in driver.find_elements("css selector", "button[aria-label='Close']"):
        button.click()  # the MLflow Assistant panel: a third of the window otherwise
    time.sleep(settle)  # the rest of the page loads after the text shows
    if page.search:
        placeholder, text = page.search
        box = driver.find_element("css selector", f"input[placeholder='{placeholder}']")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
        box.send_keys(text)
    if page.scroll_to:  # first, so what renders only when scrolled to is there to click
        scroll_to(driver, page.scroll_to)
    if page.click:
        # The first one shown: with several runs, the text stands in hidden places too.
        matches = driver.find_elements("xpath", f"//*[text()='{page.click}']")
        target = next(element for element in matches if element.is_displayed())
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", target)
        time.sleep(1)  # the click lands where the element is once scrolling ends
        target.click()
    if page.scroll_to:
        scroll_to(driver, page.scroll_to)
    time.sleep(settle)  # charts and images draw
    driver.save_screenshot(str(REPO / "docs" / page.file))
    print(f"wrote docs/{page.file}", file=sys.stderr)


def pages(client: mlflow.MlflowClient, base: str) -> list[Page]:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    exp_id = experiment.experiment_id
    train_runs = client.search_runs([exp_id], "tags.step = 'train'", order_by=["start_time ASC"])
    names = [r.info.run_name for r in train_runs]
    # Two of them side by side: their training curves fill the window's width.
    ids = json.dumps([r.info.run_id for r in train_runs[:2]])
    compare = urllib.parse.urlencode({"runs": ids, "experiments": json.dumps([exp_id])})
    (model, *_) = client.search_logged_models([exp_id], order_by=[{"field_name": "creation_time"}])
    runs_url = f"{base}/#/experiments/{exp_id}/runs"
    return [
        # The experiment as it opens with the UI's workflow switch on "Machine learning"
        # (MLflow 3.17 starts on "GenAI", and its overview, whatever the experiment's kind
        # tag says); tall enough for every run's row.
        Page(
            "mlflow-runs.png",
            f"{base}/#/experiments/{exp_id}?workflowType=machine_learning",
            names[-1],
            height=760,
        ),
        # Searching "loss" shows one chart per section: train, validation and test loss.
        Page(
            "mlflow-charts.png",
            f"{runs_url}?compareRunsMode=CHART&workflowType=machine_learning",
            "val",
            search=("Search metric charts", "loss"),
            height=1900,
        ),
        Page(
            "mlflow-compare.png",
            f"{base}/#/compare-runs?{compare}",
            names[0],
            click="training_curves.png",
            scroll_to="Artifacts",
            height=640,
        ),
        Page(
            "mlflow-model.png",
            f"{base}/#/experiments/{exp_id}/models/{model.model_id}",
            model.name,
            search=("Search metrics", "test/"),
        ),
    ]


def shoot_page(model: Path) -> None:
    """docs/page.png: the server's page at / after a headline was classified."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    server = Server(str(model), dict(os.environ))
    driver = None
    try:
        server.wait_ready(timeout=120)
        driver = headless_chromium(900, 1000)
        driver.get(f"{server.url}/")
        box = driver.find_element(By.ID, "text")
        box.send_keys("Oil prices fall as OPEC agrees to raise output", Keys.ENTER)
        wait_for_text(driver, "Answered in")
        driver.save_screenshot(str(REPO / "docs" / "page.png"))
    finally:
        if driver is not None:
            driver.quit()
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="folder of a store this script filled before")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ag_news"))
    parser.add_argument(
        "--page", type=Path, help="only docs/page.png, served from this exported model folder"
    )
    args = parser.parse_args()
    if args.page:
        shoot_page(args.page)
        return 0
    store = (args.store or Path(tempfile.mkdtemp(prefix="distrinews-screens-"))).resolve()
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{store / 'mlflow.db'}")
    if args.store is None:
        make_runs(store, args.data, env)
    ui = LocalServer(
        lambda port: [
            "mlflow",
            "ui",
            "--backend-store-uri",
            env["MLFLOW_TRACKING_URI"],
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env,
        cwd=store,
        ready_path="/health",
    )
    driver = None
    try:
        ui.wait_ready(timeout=120)
        driver = headless_chromium(1700, 1000)
        for page in pages(mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]), ui.url):
            shoot(driver, page)
    finally:
        if driver is not None:
            driver.quit()
        ui.stop()
    print(f"runs kept in {store} (--store {store} reuses them)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
