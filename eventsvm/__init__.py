"""eventsvm: OpenStack's boot-a-server flow as an event-sourced, append-only log."""

__version__ = "0.1.0"
