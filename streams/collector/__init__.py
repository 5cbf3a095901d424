"""The HTTP collector: `http.py` serves the Segment-compatible API (track, page, screen,
identify, group, alias, batch) and answers once Kafka acknowledged every event; `producer.py`
micro-batches the envelopes (`streams.envelope`) into events.raw. `trackwatch collector` and
`trackwatch run` start it (`streams.cli.service`)."""
