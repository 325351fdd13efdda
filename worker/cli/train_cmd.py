"""``idle-accel submit train-classifier`` and ``submit predict``: train a model on the fleet."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console

from compute import plans, train
from compute import train_spec as ts
from worker.celery_gate import close_client
from worker.cli.submit_cmd import Region, Timeout, Wait, _client, _outcome, _run, submit


def _default(name: str) -> float:
    return ts.NUMBERS[name][0]


@submit.command("train-classifier")
def train_classifier(
    data: Annotated[str, typer.Argument(help="CSV with a header 'text,label'.")],
    output: Annotated[str, typer.Option(help="The model folder to write (and the job's "
                                             "rounds, metrics and plot meanwhile).")],
    rounds: Annotated[int, typer.Option(help="DiLoCo rounds.")] = int(_default("rounds")),
    replicas: Annotated[int, typer.Option(help="Replicas per round (M).")]
    = int(_default("replicas")),
    inner_steps: Annotated[int, typer.Option(help="AdamW steps per replica and round (H).")]
    = int(_default("inner_steps")),
    batch_size: Annotated[int, typer.Option(help="Texts per step.")]
    = int(_default("batch_size")),
    lr: Annotated[float, typer.Option(help="The replicas' AdamW learning rate.")]
    = _default("lr"),
    outer_lr: Annotated[float, typer.Option(help="The outer Nesterov step's learning rate.")]
    = _default("outer_lr"),
    outer_momentum: Annotated[float, typer.Option(help="The outer step's momentum.")]
    = _default("outer_momentum"),
    quorum: Annotated[int | None, typer.Option(
        help="Close a round once this many replicas arrived (default: all).")] = None,
    deadline: Annotated[float, typer.Option(
        help="Seconds after which a round closes with the replicas it has.")]
    = _default("deadline"),
    model: Annotated[str, typer.Option(help="A registered model.")] = "minilm-classifier",
    train_layers: Annotated[int | None, typer.Option(
        help="MiniLM: how many of its 6 top layers train (default 2).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split, the order and dropout.")] = 0,
    baseline: Annotated[bool, typer.Option(
        "--baseline", help="Also train in one process on as many samples, for the plot.")]
    = False,
    gpu: Annotated[bool, typer.Option("--gpu", help="Send the replicas to GPU workers.")]
    = False,
    queue: Annotated[str, typer.Option(
        help="Queue of the steps that write the model (team machines only).")] = ts.TEAM_QUEUE,
    region: Region = None, wait: Wait = True, timeout: Timeout = 24 * 3600.0,
) -> None:
    """Fine-tune a text classifier (MiniLM) on the fleet: DiLoCo rounds of replicas."""
    options = {"train_layers": train_layers} if train_layers is not None else {}

    def send(app: Any) -> Any:
        if not _served(app, queue):
            Console().print(f"[yellow]no live worker serves the queue {queue!r}[/], where the "
                            "rounds start and close: start one on a team machine "
                            "(idle-accel worker --mode dedicated, or --queues "
                            f"{queue}); until then the job waits", highlight=False)
        return plans.train_classifier(
            app, data, output, rounds=rounds, replicas=replicas, inner_steps=inner_steps,
            batch_size=batch_size, lr=lr, outer_lr=outer_lr, outer_momentum=outer_momentum,
            quorum=quorum, deadline=deadline, model=model, seed=seed, baseline=baseline,
            gpu=gpu, queue=queue, region=region, options=options)

    _run(send, wait, timeout)


def _served(app: Any, queue: str) -> bool:
    """Some live worker's status report lists ``queue`` (the team's own reports only)."""
    from worker.status import read_fleet

    return any(queue in (document.get("queues") or [])
               for document in read_fleet(app.backend.client))


@submit.command("predict")
def predict(
    model: Annotated[str, typer.Argument(help="A model folder a training job wrote.")],
    texts: Annotated[list[str], typer.Argument(help="Texts to label.")],
    region: Region = None, wait: Wait = True, timeout: Timeout = 600.0,
) -> None:
    """Label texts with a trained classifier, on a worker."""
    app = _client()
    console = Console()
    try:
        options = {"queue": f"cpu@{region}"} if region else {}
        result = train.predict.apply_async((plans._absolute(model), texts), **options)
        console.print(f"task [bold]{result.id}[/] sent")
        if wait:
            raise typer.Exit(_outcome(app, result, timeout, console))
        print(json.dumps({"task": result.id}))
    finally:
        close_client(app)
