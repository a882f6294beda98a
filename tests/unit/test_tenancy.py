"""The tenancy rules as a hostile tenant would try them: paths out of the
namespace's root, Secrets not meant for trainpipe, Ray addresses the
operator was not configured with, a token for one address used for another."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from trainpipe_operator.controller.settings import OperatorSettings
from trainpipe_operator.tenancy import (
    RULES,
    TenancySettings,
    check_all,
    check_paths,
    check_ray_address,
    check_real_paths,
    check_token_secret,
    credential,
)
from trainpipe_operator.tenancy.paths import resolve
from trainpipe_operator.tenancy.ray_access import normalize_address

ROOT = "/artifacts"
A, B = "http://ray-a:8265", "http://ray-b.team-b.svc:8265"
SETTINGS = TenancySettings(artifact_root=ROOT, ray_allowed_addresses=(A, B))


def source(value: str) -> dict:
    return {"data": {"source": value}}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(kind: str = "trainpipe.io/ray-token", **data: str) -> dict:
    return {"metadata": {"name": "ray"}, "type": kind, "data": {k: b64(v) for k, v in data.items()}}


def ray_spec(address: str | None = None) -> dict:
    return {"runtime": {"type": "ray", "ray": {"address": address, "tokenSecret": "ray"}}}


# ---------------------------------------------------------------- paths
@pytest.mark.parametrize(("value", "resolved"), [
    ("builtin:digits", "builtin:digits"),
    ("data/jersey", "/artifacts/team-a/data/jersey"),
    ("./data/jersey/", "/artifacts/team-a/data/jersey"),
    ("/artifacts/team-a/data", "/artifacts/team-a/data"),
    ("/artifacts//team-a/./data", "/artifacts/team-a/data"),
    ("file:///artifacts/team-a/data", "/artifacts/team-a/data"),
    ("file:///artifacts/team-a/my%20data", "/artifacts/team-a/my data"),
])
def test_paths_in_the_namespaces_root_resolve_there(value: str, resolved: str) -> None:
    result = resolve("spec.data.source", value, "team-a", SETTINGS)
    assert result.problems == [] and result.path == resolved


@pytest.mark.parametrize(("value", "why"), [
    ("/artifacts/team-b/data", "leaves namespace 'team-a''s root"),
    ("/etc", "leaves namespace 'team-a''s root"),
    ("/artifacts", "leaves namespace 'team-a''s root"),
    ("/artifacts/team-a-old/data", "leaves namespace 'team-a''s root"),  # a prefix is not a parent
    ("//artifacts/team-b", "leaves namespace 'team-a''s root"),
    ("../team-b/data", "contains '..'"),
    ("data/../../team-b", "contains '..'"),
    ("/artifacts/team-a/../team-b", "contains '..'"),
    ("file:///artifacts/team-b/data", "leaves namespace 'team-a''s root"),
    ("file:///artifacts/team-a/%2e%2e/team-b", "contains '..'"),
    ("file://otherhost/artifacts/team-a/data", "names host 'otherhost'"),
    ("file:artifacts/team-a", "uses scheme 'file'"),
    ("pvc://team-b-claim/data", "uses scheme 'pvc'"),
    ("s3://bucket/data", "uses scheme 's3'"),
    ("~/data", "starts with '~'"),
    ("~team-b/data", "starts with '~'"),
    ("data\\..\\..\\team-b", "backslash"),
    ("data\x00/x", "control character"),
    ("file:///artifacts/team-a/%00x", "control character"),
    ("builtin:../x", "not a builtin dataset name"),
    ("", "is empty"),
])
def test_paths_out_of_the_namespaces_root_are_refused_naming_the_field(value: str, why: str) -> None:
    (message,) = check_paths(source(value), "team-a", SETTINGS)
    assert message.startswith(f"spec.data.source: {value!r} ")
    assert why in message
    assert "allowed: builtin:<name>, a path relative to /artifacts/team-a/ or an absolute path under " \
           "/artifacts/team-a/" in message


def test_pretrained_weights_keep_to_the_same_root() -> None:
    spec = {"model": {"pretrained": "/artifacts/team-b/runs/x/model.pt"}}
    (message,) = check_paths(spec, "team-a", SETTINGS)
    assert message.startswith("spec.model.pretrained: '/artifacts/team-b/runs/x/model.pt' leaves namespace")
    assert "builtin" not in message  # weights are a file, never a builtin dataset
    assert check_paths({"model": {"pretrained": "weights/r18.pt"}}, "team-a", SETTINGS) == []


def test_a_symbolic_link_out_of_the_root_is_refused(tmp_path: Path) -> None:
    settings = TenancySettings(artifact_root=str(tmp_path))
    (tmp_path / "team-b" / "data").mkdir(parents=True)
    (tmp_path / "team-a" / "mine").mkdir(parents=True)
    (tmp_path / "team-a" / "theirs").symlink_to(tmp_path / "team-b" / "data")
    assert check_paths(source("theirs"), "team-a", settings) == []  # lexically inside
    (message,) = check_real_paths(source("theirs"), "team-a", settings)
    assert message.startswith("spec.data.source: 'theirs' leads through a symbolic link out of namespace 'team-a'")
    assert check_real_paths(source("mine"), "team-a", settings) == []
    assert check_real_paths(source("builtin:digits"), "team-a", settings) == []


# ---------------------------------------------------------- ray address
def test_an_address_not_allowed_is_refused_naming_the_field() -> None:
    spec = {"runtime": {"type": "ray", "ray": {"address": "http://attacker.example:8265"}}}
    (message,) = check_ray_address(spec, "team-a", SETTINGS)
    assert message == ("spec.runtime.ray.address: 'http://attacker.example:8265' is not a Ray cluster this "
                       "operator may use; allowed: http://ray-a:8265, http://ray-b.team-b.svc:8265")


@pytest.mark.parametrize("address", [
    "http://ray-a:8265/", "HTTP://RAY-A:8265", "http://ray-a:8265//",
])
def test_an_allowed_address_matches_after_normalisation(address: str) -> None:
    assert check_ray_address({"runtime": {"type": "ray", "ray": {"address": address}}}, "ns", SETTINGS) == []


@pytest.mark.parametrize("address", [
    "http://ray-a:8265@attacker:8265",  # userinfo: the host is the attacker
    "http://user:pw@ray-a:8265",
    "http://ray-a:8266",
    "http://ray-a",  # port 80, not 8265
    "https://ray-a:8265",
    "http://ray-a:8265.attacker.example",
    "http://ray-a:8265/../x?y",
    "ray://ray-a:10001",
    "ray-a:8265",
])
def test_lookalike_addresses_are_refused(address: str) -> None:
    (message,) = check_ray_address({"runtime": {"type": "ray", "ray": {"address": address}}}, "ns", SETTINGS)
    assert message.startswith("spec.runtime.ray.address: ")


def test_nothing_is_allowed_by_default_but_rayjobs_and_the_operators_own_default() -> None:
    bare = TenancySettings(artifact_root=ROOT)
    spec = {"runtime": {"type": "ray", "ray": {"address": A}}}
    (message,) = check_ray_address(spec, "ns", bare)
    assert "allowed: none (this operator runs runtime.type: rayjob only" in message
    assert check_ray_address({"runtime": {"type": "rayjob"}}, "ns", bare) == []
    own = TenancySettings(artifact_root=ROOT, default_ray_address=A)
    assert check_ray_address(spec, "ns", own) == []


def test_normalize_address() -> None:
    assert normalize_address("HTTP://Head:8265/") == "http://head:8265"
    assert normalize_address("https://head/ray/") == "https://head:443/ray"
    assert normalize_address("http://u@head:8265") is None
    assert normalize_address("http://head:99999") is None


# -------------------------------------------------------------- secrets
def test_a_service_account_token_secret_is_refused() -> None:
    sa = secret("kubernetes.io/service-account-token", token="eyJhbGciOi...", address=A)
    (message,) = check_token_secret(sa, ray_spec(A), "team-a", SETTINGS)
    assert message.startswith("spec.runtime.ray.tokenSecret: Secret team-a/ray is a service-account token")
    assert "eyJ" not in message
    with pytest.raises(ValueError, match="service-account token"):
        credential(sa, ray_spec(A), "team-a", SETTINGS)


@pytest.mark.parametrize("kind", ["Opaque", "kubernetes.io/dockerconfigjson", "", "trainpipe.io/ray-token2"])
def test_a_secret_of_another_type_is_refused(kind: str) -> None:
    (message,) = check_token_secret(secret(kind, token="t0k3n", address=A), ray_spec(A), "team-a", SETTINGS)
    assert "not one meant for trainpipe; allowed: a Secret of type trainpipe.io/ray-token" in message
    assert "t0k3n" not in message


@pytest.mark.parametrize("data", [{"token": "t"}, {"address": A}, {"token": "", "address": A}])
def test_a_token_without_its_address_or_an_address_without_token_is_refused(data: dict) -> None:
    (message,) = check_token_secret(secret(**data), ray_spec(), "team-a", SETTINGS)
    assert message.startswith("spec.runtime.ray.tokenSecret: Secret team-a/ray has no (valid base64, non-empty) key")


def test_a_token_for_address_a_is_never_used_for_address_b() -> None:
    for_a = secret(token="token-a", address=A)
    (message,) = check_token_secret(for_a, ray_spec(B), "team-a", SETTINGS)
    assert message.startswith(f"spec.runtime.ray.address: {B!r} is not the address Secret team-a/ray holds its "
                              f"token for ({A!r})")
    assert "token-a" not in message


def test_a_secret_bound_to_an_address_not_allowed_is_refused() -> None:
    evil = secret(token="t", address="http://attacker:8265")
    (message,) = check_token_secret(evil, ray_spec(), "team-a", SETTINGS)
    assert message.startswith("spec.runtime.ray.tokenSecret (Secret team-a/ray, key 'address'): "
                              "'http://attacker:8265' is not a Ray cluster this operator may use")


def test_a_good_secret_gives_the_token_and_its_address_only() -> None:
    good = secret(token="token-a", address=A + "/")
    assert check_token_secret(good, ray_spec("HTTP://ray-a:8265"), "team-a", SETTINGS) == []
    cred = credential(good, ray_spec(), "team-a", SETTINGS)
    assert (cred.address, cred.token) == (A + "/", "token-a")
    assert "token-a" not in repr(cred)


# ------------------------------------------------------------ together
def test_check_all_runs_every_pure_rule() -> None:
    spec = {**source("../x"), "runtime": {"type": "ray", "ray": {"address": "http://evil:1"}}}
    fields = [m.split(":")[0] for m in check_all(spec, "team-a", SETTINGS)]
    assert fields == ["spec.data.source", "spec.runtime.ray.address"]
    assert check_paths in RULES and check_ray_address in RULES


def test_operator_settings_feed_the_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINPIPE_RAY_ALLOWED_ADDRESSES", f"{A}, {B},")
    monkeypatch.setenv("TRAINPIPE_RAY_ADDRESS", "http://default:8265")
    monkeypatch.setenv("TRAINPIPE_ARTIFACT_ROOT", "/store")
    rules = OperatorSettings().tenancy()
    assert rules == TenancySettings("/store", (A, B), "http://default:8265")
    assert rules.namespace_root("team-a") == "/store/team-a"
