"""The Kafka names of a network (evnet.protocols.vocabulary.Topics, kafka_prefix)."""

import pytest

from evnet.protocols.vocabulary import TOPIC_CP_EVENTS, TOPICS, Topics, kafka_prefix


def test_topics_and_groups_under_a_prefix_and_back():
    names = Topics("site-A_1.x")
    assert names.topic(TOPIC_CP_EVENTS) == "site-A_1.x.cp.events"
    assert names.group("evcentral") == "site-A_1.x.evcentral"
    assert names.name("site-A_1.x.cp.events") == TOPIC_CP_EVENTS
    with pytest.raises(ValueError, match="not under the Kafka prefix"):
        names.name("cp.events")


def test_no_prefix_is_todays_names():
    names = Topics()
    assert [names.topic(t) for t in TOPICS] == list(TOPICS)
    assert names.group("evcentral") == "evcentral" and names.name("cp.events") == "cp.events"


@pytest.mark.parametrize("bad", ["site A", ".site", "a/b", "x" * 101])
def test_a_prefix_kafka_would_refuse_or_that_is_ambiguous_is_refused(bad):
    with pytest.raises(ValueError, match="Kafka prefix"):
        kafka_prefix(bad)
    with pytest.raises(ValueError):
        Topics(bad)
    assert kafka_prefix("siteA") == "siteA" and kafka_prefix("") == ""
