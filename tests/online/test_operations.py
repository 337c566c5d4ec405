"""Operations: degraded mode with Redis stopped mid-test, hot swap under load, SIGTERM drain, fuzzing."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fourfold import LocalRegistry
from fourfold.demo.features import FRAUD_FEATURES
from fourfold.features.online import OnlineFeatures
from fourfold.features.stores import open_store
from fourfold.online.settings import ServeSettings
from serving import free_port, redis_server, running, serve_process, wait_until

BODY = {"user_id": "u000001", "amount": 12.0, "merchant_category": 2, "device": 0}


def _refuses(port: int) -> bool:
    """Whether nothing listens on ``port`` any more."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _scrape(base: str, prefix: str) -> float | None:
    """The value of the first sample in ``base``'s /metrics whose line starts with ``prefix``."""
    for line in httpx.get(base + "/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return None


def _wait_all(events: list[threading.Event], timeout: float, what: str, failures: list[str]) -> None:
    deadline = time.monotonic() + timeout
    for event in events:
        if not event.wait(max(0.0, deadline - time.monotonic())):
            raise AssertionError(f"waited {timeout} s for {what}; failed requests: {failures[:3]}")


def test_redis_stopped_mid_test_degrades_then_recovers(registered: str, fraud_log: pa.Table) -> None:
    with redis_server() as port:
        url = f"redis://127.0.0.1:{port}/0?socket_timeout=0.05&socket_connect_timeout=0.05"
        store = open_store(url)
        OnlineFeatures(FRAUD_FEATURES, store).materialize(fraud_log.slice(0, 5000))
        store.close()
        settings = ServeSettings(
            model=registered, store=url, reload_interval_s=0, access_log=False, cache_size=0
        )
        with running(settings) as base:
            healthy = httpx.post(base + "/predict", json=BODY).json()
            assert healthy["degraded"] is False
            subprocess.run(
                ["redis-cli", "-p", str(port), "shutdown", "nosave"], check=False, capture_output=True
            )
            wait_until(lambda: _refuses(port), what=f"Redis on port {port} to stop")
            down = httpx.post(base + "/predict", json=BODY)
            assert down.status_code == 200, down.text
            assert down.json()["degraded"] is True
            assert 'fourfold_degraded_total{reason="store_error"}' in httpx.get(base + "/metrics").text or (
                'fourfold_degraded_total{reason="timeout"}' in httpx.get(base + "/metrics").text
            )


def test_no_defaults_means_503_when_the_store_is_down(registered: str, fraud_package: Path) -> None:
    strict = FRAUD_FEATURES.to_dict() | {"defaults_acceptable": False}
    from fourfold import load_package, save_model
    from fourfold.features import FeatureSet

    pkg = load_package(fraud_package)
    model = pkg.load_native()
    path = save_model(model.booster, fraud_package.parent / "strict", name="fraud", signature=pkg.signature,  # type: ignore[attr-defined]
                      sample=pkg.sample(), features=FeatureSet.from_dict(strict)).path  # fmt: skip
    LocalRegistry().register(path, name="strict", aliases=["production"])
    settings = ServeSettings(model="models:/strict/production", store="redis://127.0.0.1:1/0?socket_connect_timeout=0.05",
                             reload_interval_s=0, access_log=False)  # fmt: skip
    with running(settings) as base:
        r = httpx.post(base + "/predict", json=BODY)
    assert r.status_code == 503
    assert "no acceptable defaults" in r.json()["error"]


def test_hot_swap_under_load_fails_no_request(registered: str, store_url: str, fraud_package: Path) -> None:
    settings = ServeSettings(model=registered, store=store_url, reload_interval_s=0.2, access_log=False,
                             cache_size=0, deadline_ms=5000)  # fmt: skip
    versions: set[str] = set()
    failures: list[str] = []
    stop = threading.Event()
    answered = {v: [threading.Event() for _ in range(4)] for v in ("1", "2")}  # per version, per client
    with running(settings) as base:

        def hammer(i: int) -> int:
            n = 0
            with httpx.Client(base_url=base, timeout=10) as client:
                while not stop.is_set():
                    r = client.post("/predict", json=BODY)
                    if r.status_code != 200:
                        failures.append(r.text)
                    else:
                        version = r.json()["model_version"]
                        versions.add(version)
                        if version in answered:
                            answered[version][i].set()
                    n += 1
            return n

        with cf.ThreadPoolExecutor(4) as pool:
            jobs = [pool.submit(hammer, i) for i in range(4)]
            try:
                _wait_all(answered["1"], 10, "every client to be answered by v1", failures)
                # moves the alias: the server's poll picks v2 up while the clients keep sending
                LocalRegistry().register(fraud_package, name="fraud", aliases=["production"])
                # every client's stream of requests crosses the swap before the load stops
                _wait_all(answered["2"], 10, "every client to be answered by v2", failures)
            finally:
                stop.set()
            total = sum(j.result() for j in jobs)
    assert failures == []
    assert versions == {"1", "2"}
    assert total > 20


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "FOURFOLD_HOME": str(home), "FOURFOLD_ACCESS_LOG": "false",
           "FOURFOLD_RELOAD_INTERVAL_S": "0", **extra}  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def test_sigterm_drains_in_flight_requests(registered: str, store_url: str, fourfold_home: Path) -> None:
    env = _env(fourfold_home, FOURFOLD_MAX_BATCH_WAIT_MS="0")
    with serve_process([registered, "--store", store_url], env) as (base, proc):
        port = int(base.rsplit(":", 1)[1])
        results: list[int] = []
        draining = threading.Event()

        def slow_client() -> None:  # a request still being sent when SIGTERM arrives
            def body() -> Any:
                yield b'{"user_id": "u000001", "amount": 12.0,'
                draining.wait(timeout=15)
                yield b' "merchant_category": 2, "device": 0}'

            r = httpx.post(base + "/predict", content=body(), headers={"content-type": "application/json",
                           "x-deadline-ms": "5000"}, timeout=10)  # fmt: skip
            results.append(r.status_code)

        inflight = "fourfold_inflight_requests "
        idle = _scrape(base, inflight)  # counts the scrape itself
        assert idle is not None
        t = threading.Thread(target=slow_client)
        t.start()
        try:
            wait_until(lambda: (_scrape(base, inflight) or 0) > idle, what="the slow request to be in flight")
            proc.send_signal(signal.SIGTERM)
            wait_until(lambda: _refuses(port), what="the server to stop accepting connections on SIGTERM")
        finally:
            draining.set()
        t.join(timeout=15)
        assert results == [200]
        assert proc.wait(timeout=15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"user_id": st.text(max_size=8), "amount": json_values}, optional={"device": json_values}),  # noqa: E501
    st.fixed_dictionaries({"inputs": st.lists(st.fixed_dictionaries({
        "name": st.sampled_from(["x", "amount"]), "shape": st.lists(st.integers(-1, 12), max_size=3),
        "datatype": st.sampled_from(["FP64", "FP32", "INT64", "BOOL", "BYTES", "NOPE"]), "data": json_values}),  # noqa: E501
        max_size=3)}),
)  # fmt: skip


def test_fuzzed_requests_never_get_a_5xx(registered: str, store_url: str) -> None:
    settings_ = ServeSettings(model=registered, store=store_url, reload_interval_s=0, access_log=False,
                              deadline_ms=5000)  # fmt: skip
    with running(settings_) as base, httpx.Client(base_url=base, timeout=10) as client:

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.sampled_from(["/predict", "/predict/batch", "/v2/models/fraud/infer"]), bodies)
        def check(path: str, body: Any) -> None:
            import orjson

            try:
                payload = orjson.dumps(body)
            except (TypeError, orjson.JSONEncodeError):
                return
            r = client.post(path, content=payload, headers={"content-type": "application/json"})
            assert r.status_code < 500, (path, body, r.text)
            assert "error" in r.json() or r.status_code == 200

        check()


def test_shared_redis_cache_serves_another_worker_and_never_another_version(
    registered: str, store_url: str, fraud_package: Path
) -> None:
    with redis_server() as port:
        common = {"model": registered, "store": store_url, "reload_interval_s": 0, "access_log": False,
                  "cache_url": f"redis://127.0.0.1:{port}/0"}  # fmt: skip
        with running(ServeSettings(**common)) as a, running(ServeSettings(**common)) as b:  # type: ignore[arg-type]
            first = httpx.post(a + "/predict", json=BODY).json()

            def stored() -> bool:
                out = subprocess.run(["redis-cli", "-p", str(port), "dbsize"], capture_output=True, text=True)
                return out.stdout.strip() not in ("", "0")

            wait_until(stored, what="A to write the shared cache entry (it does after answering)")
            second = httpx.post(b + "/predict", json=BODY).json()
            assert second["score"] == first["score"]
            assert 'fourfold_cache_total{result="shared_hit"} 1.0' in httpx.get(b + "/metrics").text
            LocalRegistry().register(fraud_package, name="fraud", aliases=["production"])
            httpx.post(b + "/admin/reload")
            third = httpx.post(b + "/predict", json=BODY).json()
            text = httpx.get(b + "/metrics").text
    assert third["model_version"] == "2"
    assert 'fourfold_cache_total{result="shared_miss"} 1.0' in text  # v2 never read v1's entry


def test_a_broken_shared_cache_never_fails_a_request(registered: str, store_url: str) -> None:
    settings_ = ServeSettings(model=registered, store=store_url, reload_interval_s=0, access_log=False,
                              cache_url=f"redis://127.0.0.1:{free_port()}/0")  # fmt: skip
    with running(settings_) as base:
        r = httpx.post(base + "/predict", json=BODY)
        text = httpx.get(base + "/metrics").text
    assert r.status_code == 200
    assert 'fourfold_cache_total{result="shared_error"}' in text


def test_metrics_add_up_across_worker_processes(registered: str, store_url: str, fourfold_home: Path) -> None:
    env = _env(fourfold_home, FOURFOLD_CACHE_SIZE="0")
    with serve_process([registered, "--store", store_url, "--workers", "2"], env) as (base, _):

        def workers() -> int:  # each live worker that has loaded the model reports it under its pid
            text = httpx.get(base + "/metrics").text
            return sum(ln.startswith("fourfold_model_info{") for ln in text.splitlines())

        wait_until(lambda: workers() == 2, timeout=30, what="both workers to load the model")
        n = 40
        for _ in range(n):  # new connections: the kernel spreads them over both workers
            assert httpx.post(base + "/predict", json=BODY).status_code == 200
        predict = 'fourfold_requests_total{route="predict"'
        # each worker applies its buffered metrics every 50 ms
        wait_until(lambda: _scrape(base, predict) == n, what=f"the scraped predict count to reach {n}")
        totals = [_scrape(base, predict) for _ in range(4)]  # whichever worker answers reports the sum
        assert totals == [float(n)] * 4


def test_schemathesis_finds_no_server_error_and_no_answer_against_the_schema(
    registered: str, store_url: str, as_of: int
) -> None:
    """The server fuzzed from its own OpenAPI document with every schemathesis check, valid and invalid
    data: no 5xx, every status and body as documented, every schema-valid request answered and every
    invalid one refused (413 counts as refused: it is how a batch over the row limit is). The one
    exception: the Open Inference Protocol's ``data`` must hold ``prod(shape)`` values, which JSON Schema
    cannot say, so a schema-valid OIP request may get a 400 - positive-data acceptance is not checked
    on that one operation."""
    import schemathesis
    from schemathesis import checks
    from schemathesis.generation import GenerationMode

    settings_ = ServeSettings(model=registered, store=store_url, reload_interval_s=0, access_log=False,
                              max_body_bytes=50_000_000)  # fmt: skip
    with running(settings_, clock=lambda: as_of) as base:
        doc = httpx.get(base + "/openapi.json").json()
        # a request over the documented row limit (maxItems) is refused with 413, as documented
        from schemathesis.config import SchemathesisConfig
        from schemathesis.config._checks import NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES as REFUSED

        config = SchemathesisConfig.from_dict(
            {"checks": {"negative_data_rejection": {"expected-statuses": [*REFUSED, "413"]}}}
        )
        schema = schemathesis.openapi.from_dict(doc, config=config)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.label for op in operations} >= {
            "POST /predict",
            "POST /predict/batch",
            "POST /v2/models/fraud/infer",
        }
        for op in operations:
            skip = [checks.positive_data_acceptance] if op.path.endswith("/infer") else []
            for mode in GenerationMode:
                if mode is GenerationMode.NEGATIVE and op.method.upper() == "GET":
                    continue  # no parameters, no body: nothing to make invalid
                _fuzz(op.as_strategy(generation_mode=mode), base, skip)


def _fuzz(strategy: Any, base: str, skip: list[Any]) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def fuzz(case: Any) -> None:
        case.call_and_validate(base_url=base, excluded_checks=skip)

    fuzz()
