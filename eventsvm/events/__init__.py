"""Events: the envelope every event carries, topic names, and the Avro codec."""

from eventsvm.events.model import Event, EventType, Topic, event_hash, new_event

__all__ = ["Event", "EventType", "Topic", "new_event", "event_hash"]
