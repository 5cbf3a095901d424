"""An independent generator of product-analytics traffic, for evaluating the detectors.

Written apart from `streams.simulator` on purpose (its own user, session, release and delivery
model, its own plan `examples/shop.yaml`), so that a backtest on it tells whether the detectors
learnt traffic or only our other simulator. Pure: envelopes in memory, no Kafka, no HTTP.

- `profiles`: named traffic profiles (level, platforms, rhythm, releases, offline SDKs,
  incidents), `PROFILES`;
- `generator.generate(profile, seed, ...)`: the envelopes, in `received_at` order;
- `incidents`: what each incident class does, its label and its annotation;
- `files`: a profile's traffic, labels and annotations as files for `trackwatch replay`.
"""
