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
