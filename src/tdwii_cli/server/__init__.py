"""The worklist manager and its stores: configuration, UPS SCP, events, journal, acceptor."""
