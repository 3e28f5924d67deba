"""The consumer's settings (``StreamConfig``) and the `assay consume` / `assay produce` argument checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from assay.engine.stream import DEAD_LETTER_FOLDER, StreamConfig, StreamConfigError
from assay.flows.cli import stream as stream_cli

REQUIRED = {"bootstrap": "127.0.0.1:9092", "topic": "t", "group": "g", "output": "out"}


def test_defaults_and_types():
    config = StreamConfig(**REQUIRED)
    assert config.output == Path("out") and isinstance(config.output, Path)
    assert (config.batch_records, config.batch_seconds, config.max_in_flight) == (2_000, 2.0, 2)
    assert not config.until_end and config.metrics_port is None
    assert config.dead_letter_folder == Path("out") / DEAD_LETTER_FOLDER and config.dead_letter_topic is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_records = 5  # type: ignore[misc]


@pytest.mark.parametrize("field, value, says", [
    ("batch_records", 0, "at least 1"),
    ("max_in_flight", 0, "at least 1"),
    ("max_text_chars", 0, "at least 1"),
    ("session_timeout_s", 0.5, "at least 1.0"),
    ("reload_seconds", -1.0, "at least 0.0"),
    ("batch_seconds", 0.0, "more than 0"),
    ("log_seconds", -2.0, "more than 0"),
    ("metrics_port", 0, "TCP port"),
    ("metrics_port", 70_000, "TCP port"),
    ("topic", " ", "must not be empty"),
    ("group", "", "must not be empty"),
    ("dead_letter", "kafka:", "needs a topic name"),
])
def test_each_bad_setting_is_named(field, value, says):
    with pytest.raises(StreamConfigError) as caught:
        StreamConfig(**{**REQUIRED, field: value})
    assert caught.value.field == field and says in caught.value.problem and field in str(caught.value)


@pytest.mark.parametrize("field, value", [("batch_records", 1), ("reload_seconds", 0.0), ("metrics_port", 65535),
                                          ("session_timeout_s", 1.0), ("batch_seconds", 0.01)])
def test_the_edges_of_each_range_are_allowed(field, value):
    assert getattr(StreamConfig(**{**REQUIRED, field: value}), field) == value


def test_dead_letters_to_a_folder_or_a_topic(tmp_path):
    assert StreamConfig(**REQUIRED, dead_letter=tmp_path).dead_letter_folder == tmp_path
    to_topic = StreamConfig(**REQUIRED, dead_letter="kafka:bad-messages")
    assert to_topic.dead_letter_topic == "bad-messages" and to_topic.dead_letter_folder is None


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    stream_cli.register(app)
    return app


def _consume(tmp_path: Path, *extra: str) -> list[str]:
    registry = tmp_path / "registry"
    registry.mkdir(exist_ok=True)
    return ["consume", "--registry", str(registry), "--bootstrap", "127.0.0.1:1", "--topic", "t", "--group", "g",
            "--output", str(tmp_path / "out"), *extra]


def test_cli_errors_are_one_clear_line(cli, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, _consume(tmp_path))
    assert result.exit_code == 1 and "has a current adapter" in result.output
    result = runner.invoke(cli, ["produce", str(tmp_path / "missing.parquet"), "--bootstrap", "127.0.0.1:1",
                                 "--topic", "t"])
    assert result.exit_code == 1 and "no such file or folder" in result.output


@pytest.mark.parametrize("option, value", [("--batch-records", "0"), ("--session-timeout", "0.5"),
                                           ("--metrics-port", "99999"), ("--dead-letter", "kafka:")])
def test_cli_checks_settings_before_loading_anything(cli, tmp_path, option, value):
    result = CliRunner().invoke(cli, _consume(tmp_path, option, value))  # the registry is empty: never read
    assert result.exit_code == 2 and f"'{option}'" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_cli_help_shows_stream_config_defaults(cli):
    result = CliRunner().invoke(cli, ["consume", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    config = StreamConfig(**REQUIRED)
    for option, name in [("--batch-records", "batch_records"), ("--batch-seconds", "batch_seconds"),
                         ("--max-in-flight", "max_in_flight"), ("--reload-seconds", "reload_seconds"),
                         ("--log-seconds", "log_seconds"), ("--max-text-chars", "max_text_chars"),
                         ("--session-timeout", "session_timeout_s")]:
        line = next(line for line in result.output.splitlines() if option in line)
        assert f"[default: ({getattr(config, name)})]" in line, line
