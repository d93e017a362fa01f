"""Every alert points its reader at a runbook section that exists and at commands that exist.

An alert read at 3 a.m. must not send anyone to a command the CLI does not have (an earlier text named
``dspex topics tail``, which never existed), so the commands quoted in the alerts are resolved against
the real CLI, options included.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from dspex.cli import app

REPO = Path(__file__).resolve().parents[3]
ALERTS = REPO / "infra" / "prometheus" / "alerts.yml"
RUNBOOKS = REPO / "docs" / "runbooks.md"
QUOTED_COMMAND = re.compile(r"`(dspex [^`]+)`")
# Words a reader fills in: KIND, JOB, PREFIX... and Prometheus templates such as {{ $labels.kind }}.
PLACEHOLDER = re.compile(r"^([A-Z][A-Z_]*|\{\{.*\}\}|\.\.\.;?)$")
TEMPLATE = re.compile(r"\{\{[^}]*\}\}")


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def runbook_anchors() -> set[str]:
    """GitHub's anchors for the level-2 headings: lower case, punctuation dropped, spaces as dashes."""
    headings = re.findall(r"^## (.+)$", RUNBOOKS.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-") for title in headings}


def resolve(words: list[str]) -> tuple[Any, list[str]]:
    """The CLI command the words name, and the words left for its options and arguments."""
    # Duck-typed: typer may ship its own copy of click, whose classes are not ``click``'s.
    command: Any = typer.main.get_command(app)
    rest = list(words)
    while rest and hasattr(command, "get_command"):
        word = rest[0]
        if PLACEHOLDER.match(word):
            return command, rest  # "dspex worker KIND": any subcommand of the group
        sub = command.get_command(typer.Context(command), word)
        assert sub is not None, f"no command {word!r} in {' '.join(words)!r}"
        command, rest = sub, rest[1:]
    return command, rest


def options(command: Any) -> set[str]:
    """A command's options; for a group reached through a placeholder, those all its commands share."""
    if not hasattr(command, "get_command"):
        return {opt for param in command.params for opt in param.opts}
    context = typer.Context(command)
    subcommands = [command.get_command(context, name) for name in command.list_commands(context)]
    return set.intersection(*(options(sub) for sub in subcommands))


def quoted_commands() -> list[tuple[str, str]]:
    found = []
    for rule in alert_rules():
        for text in rule["annotations"].values():
            for command in QUOTED_COMMAND.findall(TEMPLATE.sub("VALUE", text)):
                found.append((rule["alert"], command))
    return found


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_links_to_its_own_runbook_section(rule: dict[str, Any]) -> None:
    url = rule["annotations"].get("runbook_url")
    assert url == f"docs/runbooks.md#{rule['alert'].lower()}"
    assert url.split("#")[1] in runbook_anchors()


def test_the_alerts_quote_commands() -> None:
    assert len({alert for alert, _ in quoted_commands()}) >= 4


@pytest.mark.parametrize(("alert", "command"), quoted_commands())
def test_every_quoted_command_and_option_exists(alert: str, command: str) -> None:
    resolved, rest = resolve(command.split()[1:])
    known = options(resolved)
    for word in rest:
        if word.startswith("--"):
            assert word.split("=")[0] in known, f"{alert}: {command!r} has no option {word}"
