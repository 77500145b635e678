"""The UPS service: store, validation, state machine, matching, subscriptions, events."""
