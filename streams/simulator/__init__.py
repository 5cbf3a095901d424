"""The ecommerce traffic simulator: Segment traffic for a tracking plan over simulated days.

- `traffic`: users, sessions, funnels, releases, seasonality; `simulate` yields envelopes (pure)
- `sessions`: the users, sessions and calls that `traffic` makes and `incidents` change (pure)
- `incidents`: the incident schedule (YAML) and the incidents' effects on the traffic (pure)
- `send`: simulated envelopes sent to a collector over HTTP, or straight into Kafka (the one
  module here with a network)

The independent generator the detectors are judged on lives apart, on purpose: `simulation`.
"""
