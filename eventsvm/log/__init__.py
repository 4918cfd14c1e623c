"""The log port (eventsvm.log.port) and its two engines, kafka and sqlite; `eventsvm.log.factory.open_log`
picks one from a URL. Import each name from its module: nothing is re-exported here."""
