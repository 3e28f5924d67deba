"""Shared pytest fixtures."""

# ---- Kafka broker (owner: infra/kafka) -------------------------------------------------------
# One real Kafka 4.x KRaft broker per test session, started on free ports via infra/kafka/start.sh.
# Use it as `kafka_broker.bootstrap` ("127.0.0.1:PORT") and mark such tests `@pytest.mark.kafka`.
from collections.abc import Iterator

import pytest
from kafka_broker import KafkaBroker, KafkaBrokerError


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """A running single-node Kafka broker shared by the whole session; stopped at session end."""
    try:
        broker = KafkaBroker.start()
    except KafkaBrokerError as exc:
        error = str(exc)
    else:
        error = ""
    if error:  # fail (never skip) so a machine without Java/Maven cannot pass the suite silently
        pytest.fail(f"Kafka broker unavailable (needs Java 17+, and Maven for the first fetch): {error}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()
# ---- end Kafka broker ------------------------------------------------------------------------


# ---- Prefect API (owner: flows) --------------------------------------------------------------
# One ephemeral Prefect API (Prefect's own test harness: a real server on a temporary database) per
# session; it takes ~20 s to start on a shared 2-core machine, so every flow test shares it.
@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory) -> Iterator[None]:
    """Run flows, tasks and events against a real, temporary Prefect server."""
    import os

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}):
        with prefect_test_harness(server_startup_timeout=120):
            yield
# ---- end Prefect API -------------------------------------------------------------------------
