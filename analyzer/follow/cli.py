"""What `trace hunt --follow` runs: sinks, checkpoint and signals around a Follower."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from analyzer.follow.checkpoint import Checkpoint, default_checkpoint_path
from analyzer.follow.follower import Follower, FollowResult
from analyzer.follow.sinks import JsonlSink, StdoutSink, WebhookSink, check_webhook_url
from analyzer.hunt.plan import HuntPlan


def follow_capture(
    captures: tuple[str, ...],
    plan: HuntPlan,
    *,
    match: str,
    output_format: str,
    jsonl_path: str | None,
    checkpoint_path: str | None,
    webhook_url: str | None,
) -> FollowResult:
    if len(captures) != 1 or not Path(captures[0]).is_dir():
        raise click.UsageError("--follow takes exactly one capture directory (the recorder's -o DIR)")
    capture_dir = Path(captures[0])
    check_webhook_url(webhook_url)
    checkpoint = Checkpoint.load(Path(checkpoint_path) if checkpoint_path else default_checkpoint_path(capture_dir), capture_dir)
    jsonl = JsonlSink(Path(jsonl_path)) if jsonl_path else None
    sinks: list = [StdoutSink(output_format)]
    if jsonl is not None:
        sinks.append(jsonl)
    webhook = WebhookSink(webhook_url) if webhook_url else None
    if webhook is not None:
        sinks.append(webhook)
    follower = Follower(capture_dir, plan.runnable, match=match, checkpoint=checkpoint, sinks=sinks, jsonl=jsonl)
    previous = {sig: signal.signal(sig, lambda *_: follower.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
    if checkpoint.last_evt_num:
        click.echo(f"following {capture_dir}: resuming after event {checkpoint.last_evt_num} ({checkpoint.path})", err=True)
    else:
        click.echo(f"following {capture_dir} from its start (checkpoint {checkpoint.path})", err=True)
    try:
        result = follower.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sink in sinks:
            sink.close()
    if webhook is not None:
        click.echo(webhook.summary(), err=True)
    click.echo(result.summary(), err=True)
    sys.stdout.flush()
    return result

