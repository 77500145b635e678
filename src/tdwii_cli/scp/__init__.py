"""The acceptor role every tdwii SCP runs on: listen, TLS, A-ASSOCIATE, sessions, replies."""
