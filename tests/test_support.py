"""The test support code itself, against real registries: what it pushes is what comes back."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import socket
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.support import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    EMPTY_DIGEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Artifact,
    Blob,
    Image,
    Index,
    Manifest,
    Registry,
    RegistryClient,
    RegistryFactory,
    TlsFiles,
    attach,
    dead_port,
    push,
    registries_yaml,
    run_regsync,
    sample_images,
    seed_catalogue,
    seed_samples,
    sha256,
    write_config,
)
from tests.support.registry import listening_port

BASE = Blob.random(20_000, "base")


def _kinds() -> dict[str, Manifest]:
    amd = Image.oci([BASE, Blob.random(5_000, "amd")], "linux/amd64")
    arm = Image.oci([BASE, Blob.random(5_000, "arm")], "linux/arm64/v8")
    d_amd = Image.docker([BASE, Blob.random(5_000, "d-amd")], "linux/amd64")
    d_arm = Image.docker([BASE, Blob.random(5_000, "d-arm")], "linux/arm64/v8")
    return {
        "docker": Image.docker([BASE, Blob.random(5_000, 1)]),
        "oci": Image.oci([BASE, Blob.random(5_000, 2)]),
        "oci-index": Index.oci([amd, arm]),
        "docker-list": Index.docker_list([d_amd, d_arm]),
        "empty-layer": Image.oci([BASE, Blob.empty(), Blob.random(10, 3)]),
    }


def skopeo_raw(reg: Registry, ref: str) -> bytes:
    out = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reg.host}/{ref}"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return out.stdout


def assert_graph_present(reg: RegistryClient, repo: str, manifest: Manifest) -> None:
    """Every manifest and blob reachable from ``manifest`` is in ``repo`` with exact bytes."""
    for m in manifest.walk():
        media_type, raw = reg.manifest(repo, m.digest)
        assert (media_type, raw) == (m.media_type, m.raw)
        for blob in m.blobs:
            assert reg.blob(repo, blob.digest) == blob.data


def test_blob_random_is_deterministic_and_sized() -> None:
    a, b = Blob.random(1000, 7), Blob.random(1000, 7)
    assert a.data == b.data and a.size == 1000
    assert a.digest == sha256(a.data)
    assert Blob.random(1000, 8).digest != a.digest
    assert Blob.empty().digest == EMPTY_DIGEST


def test_manifest_shapes() -> None:
    kinds = _kinds()
    assert kinds["docker"].media_type == DOCKER_MANIFEST
    assert kinds["oci"].json["layers"][0]["digest"] == BASE.digest
    index = kinds["oci-index"].json
    assert index["mediaType"] == OCI_INDEX
    assert [m["platform"] for m in index["manifests"]] == [
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "arm64", "variant": "v8"},
    ]
    config = json.loads(kinds["docker"].blobs[0].data)
    assert config["architecture"] == "amd64" and config["rootfs"]["type"] == "layers"
    with pytest.raises(ValueError):
        Index.docker_list([kinds["oci"]])


@pytest.mark.parametrize("kind", list(_kinds()))
def test_push_reads_back_exact_bytes(source_registry: Registry, kind: str) -> None:
    manifest = _kinds()[kind]
    pushed = push(source_registry, "diamol/app", kind, manifest)

    assert pushed.digest == manifest.digest
    assert source_registry.manifest_digest("diamol/app", kind) == manifest.digest
    media_type, raw = source_registry.manifest("diamol/app", kind)
    assert (media_type, sha256(raw), raw) == (manifest.media_type, manifest.digest, manifest.raw)
    assert_graph_present(source_registry, "diamol/app", manifest)
    assert set(pushed.blobs) == {b.digest for m in manifest.walk() for b in m.blobs}
    assert pushed.manifests[-1] == manifest.digest
    assert skopeo_raw(source_registry, f"diamol/app:{kind}") == manifest.raw


def test_list_and_index_children_are_pushed_by_digest(source_registry: Registry) -> None:
    manifest = _kinds()["docker-list"]
    pushed = push(source_registry, "diamol/list", "1", manifest)
    assert source_registry.tags("diamol/list") == ["1"]
    assert len(pushed.manifests) == 3
    for child in manifest.children:
        assert source_registry.manifest_digest("diamol/list", child.digest) == child.digest
    assert source_registry.manifest("diamol/list", "1")[0] == DOCKER_LIST


def test_artifact_with_subject_and_referrers_fallback(source_registry: Registry) -> None:
    image = _kinds()["oci"]
    push(source_registry, "diamol/app", "1", image)
    sbom = Artifact.oci(image, payloads=[Blob(b'{"sbom": true}')])
    sig = Artifact.oci(image, "application/vnd.example.sig", [Blob(b"sig")])

    pushed = attach(source_registry, "diamol/app", sbom)
    attach(source_registry, "diamol/app", sig)
    attach(source_registry, "diamol/app", sbom)  # again: no duplicate entry

    assert pushed.tag is None
    media_type, raw = source_registry.manifest("diamol/app", sbom.digest)
    assert (media_type, raw) == (OCI_MANIFEST, sbom.raw)
    assert json.loads(raw)["subject"]["digest"] == image.digest
    fallback = "sha256-" + image.digest.removeprefix("sha256:")
    assert sorted(source_registry.tags("diamol/app")) == sorted(["1", fallback])
    index = json.loads(source_registry.manifest("diamol/app", fallback)[1])
    assert [(d["digest"], d["artifactType"]) for d in index["manifests"]] == [
        (sbom.digest, "application/vnd.example.sbom.v1+json"),
        (sig.digest, "application/vnd.example.sig"),
    ]


def test_delete_manifest_removes_tag(source_registry: Registry) -> None:
    image = _kinds()["docker"]
    push(source_registry, "diamol/app", "1", image)
    source_registry.delete_manifest("diamol/app", image.digest)
    assert source_registry.manifest_digest("diamol/app", "1") is None
    assert source_registry.tags("diamol/app") == []


def test_catalog_and_tags_page_through(source_registry: Registry) -> None:
    cat = seed_catalogue(source_registry, repos=3, tags=2, layers=2, layer_size=1000)
    assert (
        source_registry.catalog() == cat.repos == ["diamol/app00", "diamol/app01", "diamol/app02"]
    )
    assert source_registry.tags("diamol/app01") == ["1.0.0", "1.1.0"]
    assert source_registry.manifest_digest("diamol/app02", "1.1.0") == cat.digest(
        "diamol/app02", "1.1.0"
    )


def test_seed_catalogue_shares_base_and_is_deterministic(registry_factory: RegistryFactory) -> None:
    one, two = registry_factory(), registry_factory()
    a = seed_catalogue(one, repos=4, tags=3, layers=3, layer_size=2000, seed=5)
    b = seed_catalogue(two, repos=4, tags=3, layers=3, layer_size=2000, seed=5)
    assert a == b
    base = Blob.random(2000, "5/base").digest
    for repo, tags in a.images.items():
        layer_sets = [json.loads(one.manifest(repo, tag)[1])["layers"] for tag in tags]
        assert all(len(layers) == 3 and layers[0]["digest"] == base for layers in layer_sets)
        assert len({layers[1]["digest"] for layers in layer_sets}) == 1  # shared in the repo
        assert len({layers[2]["digest"] for layers in layer_sets}) == 3  # own per tag
        for pushed in tags.values():
            assert len(pushed.blobs) == 4 and base in pushed.blobs  # config + 3 layers
    configs = sum(s for t in a.images.values() for p in t.values() for s in p.blobs.values()) - (
        4 * 3 * 3 * 2000
    )
    assert a.total_bytes == 4 * 5 * 2000 + configs  # per repo: base, middle, 3 own layers


def test_seed_samples_cover_every_kind(source_registry: Registry) -> None:
    pushed = seed_samples(source_registry)
    kinds = {p.media_type for p in pushed}
    assert kinds == {DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST}
    for p, manifest in zip(pushed, sample_images().values(), strict=True):
        assert source_registry.manifest_digest(p.repo, p.tag or "") == manifest.digest


def test_htpasswd_refuses_anonymous_and_accepts_user(registry_factory: RegistryFactory) -> None:
    reg = registry_factory(htpasswd={"alice": "s3cret"})
    assert reg.ping() == 401
    push(reg, "diamol/app", "1", _kinds()["docker"])
    assert reg.tags("diamol/app") == ["1"]
    anonymous = RegistryClient(reg.url)
    assert anonymous.request("GET", "/v2/diamol/app/tags/list").status == 401
    wrong = RegistryClient(reg.url, credentials=("alice", "nope"))
    assert wrong.request("GET", "/v2/diamol/app/tags/list").status == 401


def test_tls_registry_with_trustme_ca(registry_factory: RegistryFactory, tls_ca: TlsFiles) -> None:
    reg = registry_factory(tls=tls_ca.server, ca_file=tls_ca.ca_pem, htpasswd={"bob": "pw"})
    assert reg.url.startswith("https://127.0.0.1:")
    image = _kinds()["oci-index"]
    push(reg, "diamol/app", "1", image)
    assert reg.manifest_digest("diamol/app", "1") == image.digest
    untrusted = RegistryClient(reg.url, credentials=("bob", "pw"))
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusted.tags("diamol/app")


def test_restart_keeps_content_and_port(source_registry: Registry) -> None:
    image = _kinds()["oci-index"]
    push(source_registry, "diamol/app", "1", image)
    host = source_registry.host
    source_registry.restart()
    assert source_registry.host == host
    assert_graph_present(source_registry, "diamol/app", image)


def test_kill_makes_it_unreachable_and_start_brings_it_back(source_registry: Registry) -> None:
    push(source_registry, "diamol/app", "1", _kinds()["docker"])
    source_registry.kill()
    assert not source_registry.running
    with pytest.raises(OSError):
        source_registry.ping()
    source_registry.start()
    assert source_registry.tags("diamol/app") == ["1"]


def test_delete_disabled_answers_405(registry_factory: RegistryFactory) -> None:
    reg = registry_factory(delete_enabled=False)
    image = _kinds()["docker"]
    push(reg, "diamol/app", "1", image)
    resp = reg.request("DELETE", f"/v2/diamol/app/manifests/{image.digest}")
    assert resp.status == 405
    assert resp.json()["errors"][0]["code"] == "UNSUPPORTED"


def test_token_auth_registry_sends_bearer_challenge(
    registry_factory: RegistryFactory, tls_ca: TlsFiles
) -> None:
    """The ``auth.token`` config is accepted by dist; the token server itself lives elsewhere."""
    reg = registry_factory(
        token_auth={
            "realm": "http://127.0.0.1:1/token",
            "service": "test-registry",
            "issuer": "test-issuer",
            "rootcertbundle": str(tls_ca.cert),  # any PEM certificate will do for startup
        },
    )
    assert reg.config()["auth"]["token"]["service"] == "test-registry"
    resp = reg.root()
    assert resp.status == 401
    challenge = resp.header("WWW-Authenticate") or ""
    assert challenge.startswith('Bearer realm="http://127.0.0.1:1/token"')
    assert 'service="test-registry"' in challenge


def test_registries_started_at_once_bind_ports_the_kernel_picked(tmp_path: Path) -> None:
    """No port is picked before the registry binds it, so parallel workers cannot collide;
    a restart keeps the port."""
    regs = [Registry(tmp_path / f"r{n}") for n in range(3)]
    try:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(Registry.start, regs))
        ports = [r.port for r in regs]
        assert len(set(ports)) == 3 and 0 not in ports
        assert [listening_port(r.pid or 0) for r in regs] == ports
        assert all(r.ping() == 200 and r.host == f"127.0.0.1:{r.port}" for r in regs)
        started = yaml.safe_load(regs[1].config_path.read_text())
        assert started["http"]["addr"] == "127.0.0.1:0"  # bound by the registry, not picked
        regs[0].restart()
        assert regs[0].port == ports[0] and regs[0].ping() == 200
    finally:
        for r in regs:
            r.cleanup()


def test_a_dead_port_refuses_connections_and_cannot_be_taken() -> None:
    port = dead_port()
    with socket.socket() as client, pytest.raises(ConnectionRefusedError):
        client.connect(("127.0.0.1", port))
    with socket.socket() as other, pytest.raises(OSError, match="in use"):
        other.bind(("127.0.0.1", port))


def test_write_config_dedents_and_registries_yaml_parses(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r")
    path = write_config(
        tmp_path,
        """
        version: 1
        rules: []
        """,
    )
    assert path.read_text() == "version: 1\nrules: []\n"
    path = write_config(tmp_path, "version: 1\n" + registries_yaml(reg), name="other.yaml")
    assert yaml.safe_load(path.read_text()) == {
        "version": 1,
        "registries": {reg.host: {"tls": "http"}},
    }


def test_run_regsync_captures_output() -> None:
    result = run_regsync("--help", timeout=60)
    assert isinstance(result.stdout, str) and isinstance(result.stderr, str)
    assert (result.stdout + result.stderr).strip()  # usage, or the traceback while cli is absent
    assert result.args[1:3] == ["-m", "regsync"]


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
def test_skopeo_copy_between_registries(registry_factory: RegistryFactory) -> None:
    """The destination-check recipe other tests use: skopeo copies what we pushed, intact."""
    src, dst = registry_factory(), registry_factory()
    image = _kinds()["oci-index"]
    push(src, "diamol/app", "1", image)
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{src.host}/diamol/app:1",
            f"docker://{dst.host}/diamol/app:1",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert dst.manifest_digest("diamol/app", "1") == image.digest
    assert_graph_present(dst, "diamol/app", image)


def test_tar_gz_layers_are_real_and_reproducible() -> None:
    layer = Blob.tar_gz(1000, "x")
    assert layer == Blob.tar_gz(1000, "x")
    with tarfile.open(fileobj=io.BytesIO(layer.data), mode="r:gz") as tar:
        member = tar.getmember("data.bin")
        assert member.size == 1000
    assert layer.diff_id == sha256(gzip.decompress(layer.data)) != layer.digest
    empty = Blob.empty_tar_gz()
    assert gzip.decompress(empty.data) == b"\0" * 1024
    config = json.loads(Image.oci([layer, empty]).blobs[0].data)
    assert config["rootfs"]["diff_ids"] == [layer.diff_id, empty.diff_id]


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
def test_sample_images_survive_plain_skopeo_copy(registry_factory: RegistryFactory) -> None:
    """Samples use real tar.gz layers, so even a recompressing copier keeps every digest."""
    src, dst = registry_factory(), registry_factory()
    for pushed in seed_samples(src):
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--all",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                f"docker://{src.host}/{pushed.ref}",
                f"docker://{dst.host}/{pushed.ref}",
            ],
            capture_output=True,
            check=True,
            timeout=60,
        )
        assert dst.manifest_digest(pushed.repo, pushed.tag or "") == pushed.digest
