"""The ``sb`` transport's receivers return the messages that have arrived without the SDK's extra wait."""

from __future__ import annotations

from types import SimpleNamespace

from azure.servicebus.aio import ServiceBusClient

from transports.servicebus.settings import return_what_has_arrived


async def test_receivers_do_not_keep_pulling_after_the_first_messages() -> None:
    """A receiver's further-pull wait (0.2 s per call in the SDK) is switched off; other objects are left alone."""
    client = ServiceBusClient.from_connection_string(
        "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=a;SharedAccessKey=b;UseDevelopmentEmulator=true"
    )
    async with client:
        receiver = client.get_queue_receiver("q")
        assert receiver._further_pull_receive_timeout > 0  # the SDK's default, which this fix exists for
        return_what_has_arrived(receiver)
        assert receiver._further_pull_receive_timeout == 0
    other = SimpleNamespace()
    return_what_has_arrived(other)
    assert not hasattr(other, "_further_pull_receive_timeout")
