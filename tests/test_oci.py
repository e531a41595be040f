"""The pure data layer: references, specs, manifests, digests."""

from __future__ import annotations

import json

import pytest

from regsync.errors import IntegrityError, ManifestError
from regsync.oci import mediatypes
from regsync.oci.digest import DigestVerifier, sha256_digest
from regsync.oci.manifest import parse_manifest
from regsync.oci.ref import DestinationSpec, SourceSpec, api_host, split_name

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nginx", ("docker.io", "library/nginx")),
        ("docker.io/nginx", ("docker.io", "library/nginx")),
        ("index.docker.io/diamol/app", ("docker.io", "diamol/app")),
        ("registry-1.docker.io/library/redis", ("docker.io", "library/redis")),
        ("localhost/team/app", ("localhost", "team/app")),
        ("127.0.0.1:5000/app", ("127.0.0.1:5000", "app")),
        ("ghcr.io/org/tool", ("ghcr.io", "org/tool")),
    ],
)
def test_docker_hub_names_normalise(name: str, expected: tuple[str, str]) -> None:
    assert split_name(name) == expected


def test_docker_hub_is_reached_at_registry_1() -> None:
    assert api_host("docker.io") == "registry-1.docker.io"
    assert api_host("ghcr.io") == "ghcr.io"


def test_glob_star_is_one_segment_and_double_star_any_depth() -> None:
    one, deep = SourceSpec.parse("r.io/team/*"), SourceSpec.parse("r.io/team/**")
    assert one.matches("team/app") and not one.matches("team/a/b") and not one.matches("other/app")
    assert deep.matches("team/a/b/c") and deep.matches("team/app")
    assert one.prefix == "team" and SourceSpec.parse("r.io/*/app").prefix == ""


@pytest.mark.parametrize(
    ("destination", "expected"),
    [
        ("mirror.local:5000", "diamol/app"),
        ("mirror.local:5000/hub", "hub/diamol/app"),
        ("mirror.local:5000/hub/{name}", "hub/app"),
        ("mirror.local:5000/x/{path}/y", "x/diamol/app/y"),
    ],
)
def test_destination_appends_the_source_path_or_fills_placeholders(
    destination: str, expected: str
) -> None:
    assert DestinationSpec.parse(destination).repo_for("diamol/app") == expected


@pytest.mark.parametrize("text", ["diamol/App", "r.io/a//b", "r.io/a/b*c/**x"])
def test_invalid_sources_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        SourceSpec.parse(text)


def test_destination_needs_a_host() -> None:
    with pytest.raises(ValueError, match="must start with a registry host"):
        DestinationSpec.parse("mirror/app")


def _index(children: list[dict[str, object]]) -> bytes:
    return json.dumps(
        {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": children}
    ).encode()


def test_manifest_keeps_raw_bytes_and_digest_is_over_them() -> None:
    raw = _index([{"mediaType": mediatypes.OCI_MANIFEST, "digest": DIGEST, "size": 10}]) + b"  "
    manifest = parse_manifest(raw)
    assert manifest.raw == raw and manifest.digest == sha256_digest(raw)
    assert manifest.is_index and manifest.children[0].digest == DIGEST


def test_unknown_child_media_types_in_an_index_are_not_errors() -> None:
    manifest = parse_manifest(
        _index([{"mediaType": "application/x-new", "digest": DIGEST, "size": 1}])
    )
    assert manifest.children[0].media_type == "application/x-new"


def test_foreign_layers_are_not_blobs_to_copy() -> None:
    body = {
        "schemaVersion": 2,
        "mediaType": mediatypes.DOCKER_MANIFEST,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": DIGEST,
            "size": 2,
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                "digest": "sha256:" + "b" * 64,
                "size": 3,
                "urls": ["https://x"],
            }
        ],
    }
    assert [b.digest for b in parse_manifest(json.dumps(body).encode()).blobs] == [DIGEST]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"schemaVersion": 1, "fsLayers": []}', "schema1"),
        (
            b'{"schemaVersion": 2, "mediaType": "application/x-weird"}',
            "unsupported manifest media type",
        ),
        (b"{" + b" " * (4 * 1024 * 1024) + b"}", "over the 4 MiB limit"),
        (json.dumps({"mediaType": mediatypes.OCI_MANIFEST, "layers": []}).encode(), "no config"),
        (_index([{"digest": "sha256:xyz", "size": 1}]), "invalid digest"),
        (_index([{"digest": DIGEST, "size": -1}]), "invalid size"),
    ],
)
def test_bad_manifests_are_manifest_errors(raw: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(raw)


def _image(
    config_type: object = "application/vnd.oci.image.config.v1+json", **extra: object
) -> bytes:
    body = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": {"mediaType": config_type, "digest": DIGEST, "size": 2},
        "layers": [],
        **extra,
    }
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_image("not a type"), "descriptor sha256:a+ has an invalid mediaType 'not a type'"),
        (_image("text/plain; charset="), "invalid mediaType"),
        (_image('a/b;x="open'), "invalid mediaType"),
        (_image("a/b;x=1\r\nX-Evil: 1"), "invalid mediaType"),
        (_image("a/b" + ";x=1" * 300), "invalid mediaType"),
        (_image("application/x\r\nX-Evil: 1"), "invalid mediaType"),
        (_image("/json"), "invalid mediaType"),
        (_image("application/" + "x" * 128), "invalid mediaType"),
        (_image(7), "invalid mediaType 7"),
        (_image(artifactType="bad type"), "manifest has an invalid artifactType 'bad type'"),
        (_image(artifactType=["a/b"]), "manifest has an invalid artifactType"),
        (_index([{"digest": DIGEST, "size": 1, "mediaType": "x"}]), "invalid mediaType 'x'"),
        (
            _index([{"digest": DIGEST, "size": 1, "artifactType": "é/x"}]),
            "invalid artifactType",
        ),
    ],
)
def test_media_types_off_the_rfc_6838_grammar_are_refused(raw: bytes, message: str) -> None:
    """README "Security model": a descriptor's mediaType/artifactType and a manifest's
    artifactType are checked by the RFC 6838 grammar where the manifest is parsed."""
    with pytest.raises(ManifestError, match=message):
        parse_manifest(raw)


def test_media_types_on_the_grammar_are_taken_as_they_are() -> None:
    helm = "application/vnd.cncf.helm.config.v1+json"
    manifest = parse_manifest(_image(helm, artifactType="application/vnd.example+type"))
    assert manifest.config is not None and manifest.config.media_type == helm
    assert manifest.artifact_type == "application/vnd.example+type"
    assert parse_manifest(_image()).artifact_type_field == ""  # absent: none
    empty = parse_manifest(_image("", artifactType=""))  # empty: as absent (Garden Linux)
    assert empty.config is not None and empty.config.media_type == ""
    assert empty.artifact_type_field == ""
    for text in (
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.in-toto+json",
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",  # GitHub's attestations
        "text/plain; charset=utf-8",
        "a/b;x=\"y z\";q='1'",
        'a/b;x="a \\"quote\\""',
        "a/b",
        "X-Y/z!#$&^_.+-",
    ):
        assert mediatypes.is_media_type(text), text
    for text in (
        "a",
        "a/b/c",
        "a /b",
        "a/b ",
        "a/b\n",
        "-a/b",
        "a/.b",
        "",
        "a/" + "b" * 128,
        "a/b;",
        "a/b; x",
        "a/b;x=",
        "a/b;x=1 ",
        'a/b;x="1',
        "a/b;x=é",
        "a/b;x=1\r\nX-Evil: 1",
        "a/b" + ";x=1" * 300,  # past MAX_MEDIA_TYPE_CHARS
    ):
        assert not mediatypes.is_media_type(text), text


def test_streaming_verifier_checks_size_and_digest() -> None:
    data = b"hello world"
    ok = DigestVerifier(sha256_digest(data), len(data))
    ok.update(data[:5])
    ok.update(data[5:])
    ok.verify()
    short = DigestVerifier(sha256_digest(data), len(data))
    short.update(data[:3])
    with pytest.raises(IntegrityError, match="received 3 bytes"):
        short.verify()
    wrong = DigestVerifier(sha256_digest(data), len(data))
    wrong.update(b"HELLO WORLD")
    with pytest.raises(IntegrityError, match="does not match"):
        wrong.verify()
    with pytest.raises(IntegrityError, match="more than"):
        DigestVerifier(sha256_digest(data), 2).update(data)
