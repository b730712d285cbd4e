"""Security of the gRPC services: bearer tokens, TLS, mutual TLS, the trainer token and
client-certificate names, rate limits, and that no secret reaches the logs.

Real servers on port 0 with the real redis-server of conftest; certificates (a CA, a server
certificate for 127.0.0.1/localhost, client certificates signed by the CA and a rogue
self-signed one) are generated with ``cryptography`` once per module.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import RedisServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from coordinator import server as coordinator_server
from coordinator.server import CoordinatorServer
from coordinator.settings import CoordinatorSettings
from coordinator.trainer_client import TrainerClient
from molhpo import cli, security
from molhpo.client import MolhpoClient
from molhpo.contract.errors import (
    InvalidArgument,
    MolhpoError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    error_from_status,
    status_code_of,
)
from molhpo.local import free_port
from molhpo.v1 import common_pb2, study_pb2, study_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from trainer import server as trainer_server
from trainer.server import TrainerServer
from trainer.settings import TrainerSettings

USER_TOKEN = "user-token-5f0c1e9a7b3d4c2e8a6f"
OTHER_USER_TOKEN = "user-token-second-0123456789abcdef"
TRAINER_TOKEN = "trainer-token-9d8c7b6a5f4e3d2c1b0a"
WRONG_TOKEN = "wrong-token-000000000000000000000"
SECRETS = (USER_TOKEN, OTHER_USER_TOKEN, TRAINER_TOKEN, WRONG_TOKEN)


# ---- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Paths of the generated PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    coordinator_cert: Path  # client certificate, CN molhpo-coordinator, signed by the CA
    coordinator_key: Path
    trainer_cert: Path  # client certificate, CN molhpo-trainer, signed by the CA
    trainer_key: Path
    rogue_cert: Path  # self-signed, CN molhpo-coordinator: not signed by the CA
    rogue_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("molhpo-test-ca", ca_key, _name("molhpo-test-ca"), ca_key, ca=True)
    ca_path, _ = _write(d, "ca", ca_cert, ca_key)

    def signed(stem: str, cn: str, server: bool = False) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        return _write(d, stem, _certificate(cn, key, ca_cert.subject, ca_key, server=server), key)

    server_cert, server_key = signed("server", "molhpo-server", server=True)
    coord_cert, coord_key = signed("coordinator", "molhpo-coordinator")
    trainer_cert, trainer_key = signed("trainer", "molhpo-trainer")
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = _certificate("molhpo-coordinator", rogue_key, _name("molhpo-coordinator"), rogue_key)
    rogue_cert, rogue_key_path = _write(d, "rogue", rogue, rogue_key)
    return Pki(
        ca_path,
        server_cert,
        server_key,
        coord_cert,
        coord_key,
        trainer_cert,
        trainer_key,
        rogue_cert,
        rogue_key_path,
    )


# ---- servers -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test here: capture all logs at DEBUG and check no token appears in them."""
    caplog.set_level(logging.DEBUG)
    yield
    text = caplog.text + "".join(repr(r.args) for r in caplog.records)
    for secret in SECRETS:
        assert secret not in text, "a token reached the logs"


@pytest.fixture
def start_coordinator(
    redis_server: RedisServer, key_prefix: str, tmp_path: Path
) -> Iterator[Callable[..., CoordinatorServer]]:
    """Start coordinators with extra settings; all are stopped at the end of the test."""
    started: list[CoordinatorServer] = []

    def start(**extra: Any) -> CoordinatorServer:
        n = len(started)
        built = coordinator_server.make_server(
            CoordinatorSettings(
                listen="127.0.0.1:0",
                redis_url=redis_server.url,
                storage_url=f"sqlite:///{tmp_path / f'studies{n}.db'}",
                key_prefix=f"{key_prefix}-{n}",
                state_dir=tmp_path,
                metrics_port=-1,
                **extra,
            )
        )
        built.start()
        started.append(built)
        return built

    yield start
    for built in started:
        built.stop(grace_s=0)


@pytest.fixture
def start_trainer(
    redis_server: RedisServer, key_prefix: str
) -> Iterator[Callable[..., TrainerServer]]:
    """Start trainers with extra settings; all are stopped at the end of the test."""
    started: list[TrainerServer] = []

    def start(**extra: Any) -> TrainerServer:
        settings: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "coordinator": f"127.0.0.1:{free_port()}",
            "redis_url": redis_server.url,
            "key_prefix": key_prefix,
            "slots": 1,
            "torch_threads": 1,
            "trainer_id": f"t-sec-{len(started)}",
            "metrics_port": -1,
        }
        built = trainer_server.make_server(TrainerSettings(**{**settings, **extra}))
        built.start()
        started.append(built)
        return built

    yield start
    for built in started:
        built.stop(grace_s=1)


def _health(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status)


def _addr(built: CoordinatorServer) -> str:
    return f"127.0.0.1:{built.port}"


def _spec(model: str = "gin2") -> common_pb2.TrialSpec:
    """A trial the trainer refuses with INVALID_ARGUMENT (unknown model): proof that the call
    got past the security checks without starting any training."""
    return common_pb2.TrialSpec(
        study_name="s",
        trial_id=1,
        trial_number=1,
        attempt=1,
        dataset=common_pb2.DatasetRef(name="freesolv"),
        model=model,
        max_epochs=1,
        objective=common_pb2.Objective(metric="rmse"),
    )


# ---- bearer tokens on StudyService / PredictService --------------------------------------------


def test_study_and_predict_need_a_valid_bearer_token(
    start_coordinator: Callable[..., CoordinatorServer],
) -> None:
    built = start_coordinator(auth_tokens=f"{USER_TOKEN},{OTHER_USER_TOKEN}")
    with MolhpoClient(_addr(built), timeout_s=10) as c:
        with pytest.raises(Unauthenticated, match="missing bearer token") as err:
            c.list_studies()
        assert "MOLHPO_TOKEN" in str(err.value)
        with pytest.raises(Unauthenticated, match="missing bearer token"):
            c.predict("any", ["CCO"])
        with pytest.raises(Unauthenticated, match="missing bearer token"):
            list(c.watch("any", timeout_s=5))
    with MolhpoClient(_addr(built), timeout_s=10, token=WRONG_TOKEN) as c:
        with pytest.raises(Unauthenticated, match="invalid token") as err:
            c.list_studies()
        assert WRONG_TOKEN not in str(err.value)
    for token in (USER_TOKEN, OTHER_USER_TOKEN):
        with MolhpoClient(_addr(built), timeout_s=10, token=token) as c:
            assert c.list_studies() == []
            with pytest.raises(NotFound):
                c.get_study("no-such-study")
            with pytest.raises(NotFound):
                c.predict("no-such-study", ["CCO"])
    # A lower-case scheme is accepted too (RFC 6750: the scheme is case-insensitive).
    with grpc.insecure_channel(_addr(built)) as ch:
        stub = study_pb2_grpc.StudyServiceStub(ch)
        resp = stub.ListStudies(
            study_pb2.ListStudiesRequest(),
            metadata=[("authorization", f"bearer {USER_TOKEN}")],
            timeout=5,
        )
        assert list(resp.studies) == []


def test_health_reflection_stay_open_and_membership_needs_no_user_token(
    start_coordinator: Callable[..., CoordinatorServer],
) -> None:
    built = start_coordinator(auth_tokens=USER_TOKEN)
    with grpc.insecure_channel(_addr(built)) as ch:
        assert _health(ch) == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        answers = list(
            refl.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
        )
        names = {s.name for s in answers[0].list_services_response.service}
        assert "molhpo.v1.StudyService" in names
        # No trainer_token configured: registration is open as before.
        stub = trainer_pb2_grpc.MembershipServiceStub(ch)
        info = trainer_pb2.TrainerInfo(trainer_id="t1", address="127.0.0.1:1", slots=1)
        stub.RegisterTrainer(trainer_pb2.RegisterTrainerRequest(info=info), timeout=5)


def test_tokens_file_is_read_once_and_bad_files_fail_at_start(
    start_coordinator: Callable[..., CoordinatorServer], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"# users\n{USER_TOKEN}\n\n{OTHER_USER_TOKEN}\n")
    built = start_coordinator(auth_tokens_file=str(tokens))
    tokens.write_text(f"{WRONG_TOKEN}\n")  # read once at start: later edits change nothing
    with MolhpoClient(_addr(built), timeout_s=10, token=OTHER_USER_TOKEN) as c:
        assert c.list_studies() == []
    with (
        MolhpoClient(_addr(built), timeout_s=10, token=WRONG_TOKEN) as c,
        pytest.raises(Unauthenticated),
    ):
        c.list_studies()

    with pytest.raises(InvalidArgument, match=r"auth_tokens_file = .*missing.*no such file"):
        start_coordinator(auth_tokens_file=str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n")
    with pytest.raises(InvalidArgument, match="holds no token"):
        start_coordinator(auth_tokens_file=str(empty))


# ---- TLS and mutual TLS ------------------------------------------------------------------------


def test_tls_client_trusting_the_ca_works_and_plaintext_fails(
    start_coordinator: Callable[..., CoordinatorServer], pki: Pki
) -> None:
    built = start_coordinator(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))
    with MolhpoClient(_addr(built), timeout_s=10, tls_ca=pki.ca) as c:
        assert c.list_studies() == []
    with MolhpoClient(
        f"localhost:{built.port}", timeout_s=10, tls_ca=pki.ca, tls_server_name="localhost"
    ) as c:
        assert c.list_studies() == []
    with MolhpoClient(_addr(built), timeout_s=5) as c, pytest.raises(Unavailable):
        c.list_studies()
    # The server name is checked: a name the certificate does not hold fails.
    with (
        MolhpoClient(_addr(built), timeout_s=5, tls_ca=pki.ca, tls_server_name="elsewhere") as c,
        pytest.raises(Unavailable),
    ):
        c.list_studies()
    # Health over TLS works without any token or client certificate.
    tls = security.ClientTLS.from_paths(pki.ca)
    assert tls is not None
    with grpc.secure_channel(_addr(built), tls.credentials()) as ch:
        assert _health(ch) == health_pb2.HealthCheckResponse.SERVING


def test_mutual_tls_refuses_clients_without_a_ca_signed_certificate(
    start_coordinator: Callable[..., CoordinatorServer], pki: Pki
) -> None:
    built = start_coordinator(
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_client_ca=str(pki.ca),
        auth_tokens=USER_TOKEN,
    )
    with MolhpoClient(
        _addr(built),
        timeout_s=10,
        token=USER_TOKEN,
        tls_ca=pki.ca,
        tls_client_cert=pki.coordinator_cert,
        tls_client_key=pki.coordinator_key,
    ) as c:
        assert c.list_studies() == []
    with (
        MolhpoClient(_addr(built), timeout_s=5, token=USER_TOKEN, tls_ca=pki.ca) as c,
        pytest.raises(Unavailable),
    ):
        c.list_studies()
    with (
        MolhpoClient(
            _addr(built),
            timeout_s=5,
            token=USER_TOKEN,
            tls_ca=pki.ca,
            tls_client_cert=pki.rogue_cert,
            tls_client_key=pki.rogue_key,
        ) as c,
        pytest.raises(Unavailable),
    ):
        c.list_studies()


def test_tls_settings_errors_name_the_setting_and_the_fix(
    start_coordinator: Callable[..., CoordinatorServer], pki: Pki, tmp_path: Path
) -> None:
    with pytest.raises(InvalidArgument, match=r"tls_cert = .*nope\.crt.*no such file"):
        start_coordinator(tls_cert=str(tmp_path / "nope.crt"), tls_key=str(pki.server_key))
    with pytest.raises(InvalidArgument, match="tls_key is empty but tls_cert is set"):
        start_coordinator(tls_cert=str(pki.server_cert))
    with pytest.raises(InvalidArgument, match="tls_client_ca is set but tls_cert"):
        start_coordinator(tls_client_ca=str(pki.ca))
    not_pem = tmp_path / "x.pem"
    not_pem.write_text("hello")
    with pytest.raises(InvalidArgument, match="not a PEM file"):
        MolhpoClient("127.0.0.1:1", tls_ca=not_pem)
    with pytest.raises(InvalidArgument, match="tls_client_cert is set but tls_client_key"):
        MolhpoClient("127.0.0.1:1", tls_ca=pki.ca, tls_client_cert=pki.coordinator_cert)


# ---- trainers accept only the coordinator ------------------------------------------------------


def test_trainer_with_a_token_refuses_other_callers(
    start_trainer: Callable[..., TrainerServer],
) -> None:
    built = start_trainer(trainer_token=TRAINER_TOKEN)
    with grpc.insecure_channel(built.address) as ch:
        stub = trainer_pb2_grpc.TrainerServiceStub(ch)
        req = trainer_pb2.RunTrialRequest(spec=_spec())
        with pytest.raises(grpc.RpcError) as err:
            stub.RunTrial(req, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "missing bearer token" in str(err.value.details())
        with pytest.raises(grpc.RpcError) as err:
            stub.CancelTrial(
                trainer_pb2.CancelTrialRequest(trial_id=1, reason="x"),
                metadata=[("authorization", f"Bearer {WRONG_TOKEN}")],
                timeout=5,
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "invalid token" in str(err.value.details())
        assert _health(ch) == health_pb2.HealthCheckResponse.SERVING
    wrong = TrainerClient(token=WRONG_TOKEN)
    with pytest.raises(Unauthenticated):
        wrong.predict(built.address, ["/nope.pt"], ["CCO"])
    wrong.close()
    # The coordinator's client, built from its settings, gets through (and the trainer then
    # judges the request itself: unknown model).
    coord = coordinator_server.trainer_client(CoordinatorSettings(trainer_token=TRAINER_TOKEN))
    with pytest.raises(InvalidArgument, match="gin2"):
        coord.run_trial(built.address, _spec())
    coord.close()


def test_trainer_checks_the_client_certificate_name(
    start_trainer: Callable[..., TrainerServer], pki: Pki
) -> None:
    built = start_trainer(
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_client_ca=str(pki.ca),
        allowed_client_cn="molhpo-coordinator",
    )

    def client(cert: Path, key: Path) -> TrainerClient:
        return TrainerClient(tls=security.ClientTLS.from_paths(pki.ca, cert, key))

    ok = client(pki.coordinator_cert, pki.coordinator_key)
    with pytest.raises(InvalidArgument, match="gin2"):
        ok.run_trial(built.address, _spec())
    ok.close()
    other = client(pki.trainer_cert, pki.trainer_key)  # signed by the CA, but another name
    with pytest.raises(PermissionDenied, match="'molhpo-trainer' is not allowed"):
        other.run_trial(built.address, _spec())
    other.close()
    rogue = client(pki.rogue_cert, pki.rogue_key)
    with pytest.raises(Unavailable):
        rogue.run_trial(built.address, _spec())
    rogue.close()
    with pytest.raises(InvalidArgument, match=r"allowed_client_cn .* needs mutual TLS"):
        start_trainer(allowed_client_cn="molhpo-coordinator")


def test_membership_needs_the_trainer_token_when_set(
    start_coordinator: Callable[..., CoordinatorServer],
) -> None:
    built = start_coordinator(trainer_token=TRAINER_TOKEN, auth_tokens=USER_TOKEN)
    info = trainer_pb2.TrainerInfo(trainer_id="t1", address="127.0.0.1:1", slots=1)
    req = trainer_pb2.RegisterTrainerRequest(info=info)
    with grpc.insecure_channel(_addr(built)) as ch:
        stub = trainer_pb2_grpc.MembershipServiceStub(ch)
        for metadata in ([], [("authorization", f"Bearer {USER_TOKEN}")]):
            with pytest.raises(grpc.RpcError) as err:
                stub.RegisterTrainer(req, metadata=metadata, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert built.core.pool.snapshot() == []
        stub.RegisterTrainer(
            req, metadata=[("authorization", f"Bearer {TRAINER_TOKEN}")], timeout=5
        )
        assert [t.trainer_id for t in built.core.pool.snapshot()] == ["t1"]


def test_full_path_with_tls_mutual_tls_and_tokens_everywhere(
    start_coordinator: Callable[..., CoordinatorServer],
    start_trainer: Callable[..., TrainerServer],
    pki: Pki,
) -> None:
    coord_settings: dict[str, Any] = {
        "tls_cert": str(pki.server_cert),
        "tls_key": str(pki.server_key),
        "tls_client_ca": str(pki.ca),
        "auth_tokens": USER_TOKEN,
        "trainer_token": TRAINER_TOKEN,
        "tls_ca": str(pki.ca),
        "tls_client_cert": str(pki.coordinator_cert),
        "tls_client_key": str(pki.coordinator_key),
        "heartbeat_interval_s": 0.2,
    }
    coord = start_coordinator(**coord_settings)
    trainer = start_trainer(
        coordinator=_addr(coord),
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_client_ca=str(pki.ca),
        allowed_client_cn="molhpo-coordinator",
        trainer_token=TRAINER_TOKEN,
        tls_ca=str(pki.ca),
        tls_client_cert=str(pki.trainer_cert),
        tls_client_key=str(pki.trainer_key),
        tls_server_name="localhost",
    )
    # Trainer -> coordinator: TLS, the trainer's certificate and the trainer token.
    assert trainer.membership.wait_registered(20), "trainer did not register"
    deadline = time.monotonic() + 10
    while not coord.core.pool.snapshot() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [t.trainer_id for t in coord.core.pool.snapshot()] == [trainer.worker.trainer_id]
    # Coordinator -> trainer: the coordinator's client, built from its settings.
    to_trainers = coordinator_server.trainer_client(CoordinatorSettings(**coord_settings))
    with pytest.raises(InvalidArgument, match="gin2"):
        to_trainers.run_trial(trainer.address, _spec())
    to_trainers.close()
    # User -> coordinator: TLS, a client certificate and the user token.
    with MolhpoClient(
        _addr(coord),
        timeout_s=10,
        token=USER_TOKEN,
        tls_ca=pki.ca,
        tls_client_cert=pki.coordinator_cert,
        tls_client_key=pki.coordinator_key,
    ) as c:
        assert c.list_studies() == []
    # A trainer without the token is refused and never joins.
    intruder = start_trainer(
        coordinator=_addr(coord),
        trainer_id="intruder",
        tls_ca=str(pki.ca),
        tls_client_cert=str(pki.trainer_cert),
        tls_client_key=str(pki.trainer_key),
    )
    assert not intruder.membership.wait_registered(1.5)
    assert [t.trainer_id for t in coord.core.pool.snapshot()] == [trainer.worker.trainer_id]


# ---- rate limits -------------------------------------------------------------------------------


def test_rate_limit_per_peer_answers_resource_exhausted(
    start_coordinator: Callable[..., CoordinatorServer],
) -> None:
    built = start_coordinator(rate_limit_per_s=1.0, rate_limit_burst=3)
    with MolhpoClient(_addr(built), timeout_s=10) as c:
        outcomes: list[str] = []
        for _ in range(5):
            try:
                c.list_studies()
                outcomes.append("ok")
            except ResourceExhausted as err:
                assert "rate limit" in str(err)
                outcomes.append("limited")
        assert outcomes[:3] == ["ok", "ok", "ok"]
        assert outcomes[4] == "limited"
    # Health checks are not limited.
    with grpc.insecure_channel(_addr(built)) as ch:
        for _ in range(10):
            assert _health(ch) == health_pb2.HealthCheckResponse.SERVING


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    bucket = security.TokenBucket(2.0, 2, clock=lambda: now[0], max_keys=2)
    assert [bucket.take("a") for _ in range(3)] == [True, True, False]
    assert bucket.take("b")
    now[0] = 0.5  # one token back for "a"
    assert bucket.take("a")
    assert not bucket.take("a")
    now[0] = 10.0
    assert bucket.take("c")  # a third key drops idle buckets
    assert bucket.take("a") and bucket.take("a") and not bucket.take("a")
    with pytest.raises(InvalidArgument, match="rate_limit_per_s = 0"):
        security.TokenBucket(0, 1)


# ---- pure helpers ------------------------------------------------------------------------------


def test_bearer_parsing_and_constant_time_match() -> None:
    assert security.bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert security.bearer_token([("x", "y"), ("authorization", "BEARER  abc ")]) == "abc"
    assert security.bearer_token([("authorization", "Basic abc")]) is None
    assert security.bearer_token(None) is None
    assert security.token_matches("b", ["a", "b"])
    assert not security.token_matches("c", ["a", "b"])
    assert not security.token_matches("", ["a"])


def test_parse_tokens_rules(tmp_path: Path) -> None:
    assert security.parse_tokens(f" {USER_TOKEN} ,,{OTHER_USER_TOKEN},{USER_TOKEN}") == [
        USER_TOKEN,
        OTHER_USER_TOKEN,
    ]
    assert security.parse_tokens("") == []
    f = tmp_path / "t"
    f.write_text("with space-in-it\n")
    with pytest.raises(InvalidArgument, match="token #1 contains whitespace"):
        security.parse_tokens(file=f)
    assert security.sending_token(f"{TRAINER_TOKEN},{USER_TOKEN}") == TRAINER_TOKEN
    assert security.sending_token("") == ""


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.0.0.1:5000", "10.0.0.1"),
        ("ipv6:[::1]:50051", "::1"),
        ("unix:/tmp/sock", "unix:/tmp/sock"),
    ],
)
def test_peer_host(peer: str, host: str) -> None:
    assert security.peer_host(peer) == host


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
        (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    ],
)
def test_new_error_classes_map_both_ways(cls: type[MolhpoError], code: grpc.StatusCode) -> None:
    assert status_code_of(cls("x")) == code
    back = error_from_status(code, "no")
    assert type(back) is cls
    assert str(back) == "no"


def test_settings_hide_secrets_and_cli_help_shows_no_value(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = CoordinatorSettings(auth_tokens=USER_TOKEN, trainer_token=TRAINER_TOKEN)
    assert USER_TOKEN not in repr(settings) and TRAINER_TOKEN not in str(settings)
    assert TRAINER_TOKEN not in repr(TrainerSettings(trainer_token=TRAINER_TOKEN))
    monkeypatch.setenv("MOLHPO_COORDINATOR_AUTH_TOKENS", USER_TOKEN)
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["coordinator", "--help"])
    out = capsys.readouterr().out
    assert "--auth-tokens" in out and USER_TOKEN not in out


def test_cli_client_commands_take_token_and_tls_flags_and_env(
    start_coordinator: Callable[..., CoordinatorServer],
    pki: Pki,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    built = start_coordinator(
        tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), auth_tokens=USER_TOKEN
    )
    for name in ("MOLHPO_TOKEN", "MOLHPO_TOKEN_FILE", "MOLHPO_TLS_CA", "MOLHPO_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "300")
    base = ["study", "list", "--coordinator", _addr(built), "--state-dir", str(tmp_path)]
    assert cli.main([*base, "--token", USER_TOKEN, "--tls-ca", str(pki.ca)]) == 0
    monkeypatch.setenv("MOLHPO_TOKEN", USER_TOKEN)
    monkeypatch.setenv("MOLHPO_TLS_CA", str(pki.ca))
    assert cli.main(base) == 0
    monkeypatch.setenv("MOLHPO_TOKEN", WRONG_TOKEN)
    assert cli.main(base) == 2
    monkeypatch.delenv("MOLHPO_TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text(f"{USER_TOKEN}\n")
    assert cli.main([*base, "--token-file", str(token_file)]) == 0
    assert cli.main([*base, "--tls-ca", str(tmp_path / "missing.pem")]) == 2
    captured = capsys.readouterr()
    assert "UNAUTHENTICATED" in captured.err
    assert "--tls-ca = " in captured.err
    for secret in SECRETS:
        assert secret not in captured.out + captured.err
