"""The metrics registry on its own: what a scrape shows when a source fails or changes."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from server.domain.models import MessageStatus
from server.metrics import GatewayMetrics


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


async def test_a_backlog_that_cannot_be_read_is_left_out_not_the_scrape() -> None:
    metrics = GatewayMetrics()
    answer: list[dict[MessageStatus, int] | Exception] = [{MessageStatus.QUEUED: 4}]

    async def backlog() -> dict[MessageStatus, int]:
        result = answer[0]
        if isinstance(result, Exception):
            raise result
        return result

    metrics.watch_backlog(backlog)
    metrics.rpc("/sms.v1.MessageService/SendMessage").done("OK", 0.002)
    first = samples(await metrics.render())
    assert first[("smsgw_outbox_backlog", (("status", "QUEUED"),))] == 4
    assert first[("smsgw_outbox_backlog", (("status", "PENDING"),))] == 0

    answer[0] = ConnectionRefusedError("database down")
    second = samples(await metrics.render())
    assert not any(name == "smsgw_outbox_backlog" for name, _ in second)  # no stale figure
    key = (
        "smsgw_rpc_requests_total",
        (("code", "OK"), ("method", "/sms.v1.MessageService/SendMessage")),
    )
    assert second[key] == 1


async def test_breaker_states_are_read_at_scrape_time() -> None:
    metrics = GatewayMetrics()
    states = {"sky": "closed", "cloud": "open"}
    metrics.watch_breakers(lambda: states)
    first = samples(await metrics.render())
    assert first[("smsgw_breaker_state", (("provider", "cloud"),))] == 2
    assert first[("smsgw_breaker_state", (("provider", "sky"),))] == 0
    states["cloud"] = "half_open"
    second = samples(await metrics.render())
    assert second[("smsgw_breaker_state", (("provider", "cloud"),))] == 1


def test_each_gateway_has_its_own_registry() -> None:
    one, two = GatewayMetrics(), GatewayMetrics()  # no "duplicated timeseries" error
    one.rate_limited.labels("ACCOUNT_SEND_RATE").inc()
    assert (
        two.registry.get_sample_value("smsgw_rate_limited_total", {"quota": "ACCOUNT_SEND_RATE"})
        is None
    )
    assert (
        one.registry.get_sample_value("smsgw_rate_limited_total", {"quota": "ACCOUNT_SEND_RATE"})
        == 1
    )
