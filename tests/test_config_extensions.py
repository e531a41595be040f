"""sync.yaml options users of regclient's regsync look for: `x-` keys, and the keys below."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from regsync.config import parse_config
from regsync.errors import ConfigError
from tests.test_config import config_error, doc, registry, rule


def test_x_keys_are_ignored_at_top_level_in_rules_and_registries() -> None:
    config = parse_config(
        doc(
            "x-common: &common {interval: 5m}",
            "x-owner: team-a",
            "version: 1",
            "registries:",
            "  registry.local:5000:",
            "    x-note: the lab registry",
            "    max_concurrency: 3",
            "defaults: {x-why: anchors, prune: false}",
            "rules:",
            "  - name: a",
            "    x-ticket: OPS-1",
            "    <<: *common",
            "    source: docker.io/diamol/*",
            "    destination: registry.local:5000",
            "    tags: {include: ['v.*'], x-comment: semver later}",
        ),
        env={},
    )
    (only,) = config.rules
    assert only.interval is not None and only.interval.total_seconds() == 300
    assert config.registry("registry.local:5000").max_concurrency == 3


def test_a_registry_host_starting_with_x_is_a_host_not_an_extension() -> None:
    config = parse_config(registry("    max_concurrency: 2", host="x-reg.example.com"), env={})
    assert config.registry("x-reg.example.com").max_concurrency == 2


@pytest.mark.parametrize("key", ["xfoo", "X-foo", "_x-foo", "extra"])
def test_other_unknown_keys_stay_errors_with_path_and_line(key: str) -> None:
    message = config_error(rule(f"    {key}: 1"))
    assert f"rules[0].{key} (sync.yaml:6): unknown key" in message


def test_an_alias_bomb_in_an_x_key_is_still_refused() -> None:
    lines = ["version: 1", "x-l0: &l0 [a, a, a, a, a, a, a, a, a]"]
    for level in range(1, 9):
        prior = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"x-l{level}: &l{level} [{prior}]")
    lines += ["rules:", "  - {name: a, source: docker.io/x/*, destination: registry.local:5000}"]
    with pytest.raises(ConfigError) as info:
        parse_config(doc(*lines), env={})
    assert "aliases expand the document beyond 10000 values" in str(info.value)


@pytest.mark.parametrize("value", ["''", '"a\\r\\nX-Evil: 1"', "[a]", "'é-agent'"])
def test_user_agent_must_be_printable_ascii(value: str) -> None:
    message = config_error(registry(f"    user_agent: {value}"))
    assert "registries.registry.local:5000.user_agent (sync.yaml:4):" in message


@pytest.mark.parametrize("value", ["0", "-1", "true", "fast", "100000"])
def test_requests_per_second_must_be_a_positive_number(value: str) -> None:
    message = config_error(registry(f"    requests_per_second: {value}"))
    assert "registries.registry.local:5000.requests_per_second (sync.yaml:4):" in message


def test_requests_per_second_takes_a_decimal() -> None:
    config = parse_config(registry("    requests_per_second: 0.5"), env={})
    assert config.registry("registry.local:5000").requests_per_second == 0.5


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("'{tag}-{when}'", "placeholders are {tag}, {date}, {digest12}"),
        ("'{tag'", "placeholders are"),
        ("'{tag}/prev'", "does not give a valid tag"),
        ("'-{tag}'", "does not give a valid tag"),
        ("'{tag}'", "would overwrite the tag itself"),
        ("true", "expected a tag template"),
    ],
)
def test_backup_template_is_checked_at_load(value: str, says: str) -> None:
    message = config_error(rule(f"    backup: {value}"))
    assert "rules[0].backup (sync.yaml:6):" in message and says in message, message


def test_backup_placeholders_and_defaults() -> None:
    config = parse_config(
        rule("    tags: {include: [v1]}").replace(
            "version: 1", "version: 1\ndefaults: {backup: 'p-{tag}'}"
        ),
        env={},
    )
    template = config.rules[0].backup
    assert template is not None and template.text == "p-{tag}"
    full = parse_config(rule("    backup: '{tag}.{date}.{digest12}'"), env={}).rules[0].backup
    assert full is not None
    now = datetime(2026, 3, 4, tzinfo=UTC)
    assert full.name("v1", "sha256:" + "ab" * 32, now) == "v1.20260304.abababababab"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("[]", "expected a list of 1 to 64 media types"),
        ("application/vnd.oci.image.manifest.v1+json", "expected a list"),
        ("[Application/JSON]", "invalid media type 'Application/JSON'"),
        ("[application/vnd.oci.image.config.v1+json]", "lists no manifest media type"),
        ("[1]", "invalid media type a number"),
    ],
)
def test_media_types_are_checked_at_load(value: str, says: str) -> None:
    message = config_error(rule(f"    media_types: {value}"))
    assert "rules[0].media_types (sync.yaml:6):" in message and says in message, message


@pytest.mark.parametrize(
    ("value", "where", "says"),
    [
        ("{artifact_type: [a/b]}", "rules[0].referrers.artifact_type", "did you mean"),
        ("{artifact_types: [Not A Type]}", "rules[0].referrers.artifact_types[0]", "invalid"),
        ("{artifact_types: ['a/b;']}", "rules[0].referrers.artifact_types[0]", "invalid"),
        ("{artifact_types: ['A/b;x=1']}", "rules[0].referrers.artifact_types[0]", "lower case"),
        ("{annotations: [a]}", "rules[0].referrers.annotations", "expected a mapping"),
        ("{annotations: {k: [v]}}", "rules[0].referrers.annotations.k", "expected a string"),
        ("3", "rules[0].referrers", "expected true, false or a mapping"),
        # An empty filter would copy every referrer: never what a templated empty list meant.
        ("{artifact_types: []}", "rules[0].referrers.artifact_types", "at least one"),
        ("{annotations: {}}", "rules[0].referrers.annotations", "at least one"),
        ("{}", "rules[0].referrers", "referrers: true"),
    ],
)
def test_referrer_filters_are_checked_at_load(value: str, where: str, says: str) -> None:
    message = config_error(rule(f"    referrers: {value}"))
    assert f"{where} (sync.yaml:6):" in message and says in message, message


def test_referrers_mapping_enables_them_with_a_filter_true_without() -> None:
    text = "    referrers: {artifact_types: [application/spdx+json], annotations: {x-k: v}}"
    (only,) = parse_config(rule(text), env={}).rules
    assert only.referrers and only.referrer_filter is not None
    assert only.referrer_filter.artifact_types == {"application/spdx+json"}
    assert dict(only.referrer_filter.annotations) == {"x-k": "v"}  # an x- name is data here
    bundle = "application/vnd.dev.sigstore.bundle+json;version=0.2"  # a parameter: as written
    (signed,) = parse_config(rule(f"    referrers: {{artifact_types: ['{bundle}']}}"), env={}).rules
    assert signed.referrer_filter is not None
    assert signed.referrer_filter.artifact_types == {bundle}
    (plain,) = parse_config(rule("    referrers: true"), env={}).rules
    assert plain.referrers and plain.referrer_filter is None
    (off,) = parse_config(
        rule("    referrers: {enabled: false, annotations: {k: v}}"), env={}
    ).rules
    assert not off.referrers and off.referrer_filter is None


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("hostname: https://real.test", "is not a registry host"),
        ("hostname: real.test/path", "is not a registry host"),
        ("path_prefix: ../up", "invalid path_prefix '../up'"),
        ("path_prefix: Up", "invalid path_prefix 'Up'"),
        ("path_prefix: /", "invalid path_prefix '/'"),
    ],
)
def test_hostname_and_path_prefix_are_checked_at_load(setting: str, says: str) -> None:
    key = setting.split(":")[0]
    message = config_error(registry(f"    {setting}"))
    assert f"registries.registry.local:5000.{key} (sync.yaml:4):" in message, message
    assert says in message, message


def test_path_prefix_slashes_are_trimmed() -> None:
    config = parse_config(registry("    path_prefix: /cache/hub/"), env={})
    assert config.registry("registry.local:5000").path_prefix == "cache/hub"


def test_referrer_filter_lists_are_bounded() -> None:
    many = ", ".join(f"k{i}: v" for i in range(65))
    message = config_error(rule(f"    referrers: {{annotations: {{{many}}}}}"))
    assert "rules[0].referrers.annotations (sync.yaml:6): has more than 64 entries" in message
