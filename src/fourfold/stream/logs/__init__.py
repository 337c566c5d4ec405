"""Stream logs behind one small contract (:mod:`fourfold.stream.logs.base`): Kafka, Redis Streams, JSONL."""
