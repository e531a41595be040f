"""sync.yaml loading: every mistake is reported with its key path and line; good files resolve."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import trustme
from pydantic import ValidationError

from regsync.config import (
    Config,
    Prune,
    RegistryConfig,
    TagFilter,
    load_config,
    parse_config,
    parse_duration,
)
from regsync.errors import ConfigError
from regsync.oci.ref import DestinationSpec, SourceSpec
from tests.support.cli import run_regsync

REPO_ROOT = Path(__file__).resolve().parent.parent
THIS_FILE = str(Path(__file__).resolve())  # a file that exists, for ca_file/client_cert cases
SECRET = "hunter2-Zq8xSecret"

RULE = "  - {name: a, source: docker.io/diamol/*, destination: registry.local:5000}"


def doc(*lines: str) -> str:
    """YAML text whose line N is ``lines[N-1]``, so expected line numbers read off directly."""
    return "\n".join(lines) + "\n"


def rule(*extra: str) -> str:
    """One valid rule on lines 1-5; ``extra`` lines (indented 4) start at line 6."""
    return doc(
        "version: 1",
        "rules:",
        "  - name: a",
        "    source: docker.io/diamol/*",
        "    destination: registry.local:5000",
        *extra,
    )


def registry(*settings: str, host: str = "registry.local:5000") -> str:
    """Settings for one registry start at line 4 (indented 4); the rule follows."""
    return doc("version: 1", "registries:", f"  {host}:", *settings, "rules:", RULE)


def config_error(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env=env or {})
    return str(info.value)


@dataclass(frozen=True)
class Bad:
    id: str
    text: str
    where: str  # "key.path (sync.yaml:LINE):", or "sync.yaml:LINE:" for the document itself
    fragment: str
    env: tuple[tuple[str, str], ...] = ()


BAD_CONFIGS = [
    # -- structure and unknown keys
    Bad("unknown_top_level_key", doc("version: 1", "mirrors: []", "rules:", RULE),
        "mirrors (sync.yaml:2):", "unknown key (valid keys: version, registries, defaults, rules)"),
    Bad("unknown_rule_key", rule("    tag: {include: ['.*']}"),
        "rules[0].tag (sync.yaml:6):", "unknown key (did you mean 'tags'?)"),
    Bad("unknown_nested_key", rule("    tags:", "      includes: ['.*']"),
        "rules[0].tags.includes (sync.yaml:7):", "unknown key (did you mean 'include'?)"),
    Bad("unknown_registry_key", registry("    tls_mode: http"),
        "registries.registry.local:5000.tls_mode (sync.yaml:4):", "did you mean 'tls'?"),
    Bad("version_2", doc("version: 2", "rules:", RULE),
        "version (sync.yaml:1):", "unsupported version 2: this regsync reads version 1"),
    Bad("missing_version", doc("rules:", RULE), "version (sync.yaml:1):", "is required"),
    Bad("missing_rules", doc("version: 1", "defaults: {interval: 1h}"),
        "rules (sync.yaml:1):", "is required"),
    Bad("empty_rules", doc("version: 1", "rules: []"),
        "rules (sync.yaml:2):", "must list at least one rule"),
    Bad("rules_not_a_list", doc("version: 1", "rules: {name: a}"),
        "rules (sync.yaml:2):", "expected a list, got a mapping"),
    Bad("yaml_syntax_error", doc("version: 1", "rules:", "  - name: a: b"),
        "sync.yaml:3:", "mapping values are not allowed here"),
    Bad("non_mapping_document", doc("- version: 1"),
        "sync.yaml:1:", "found a list; expected a mapping with version and rules"),
    Bad("empty_document", doc("# nothing here"), "sync.yaml:1:", "the file is empty"),
    Bad("duplicate_yaml_key", rule("    source: docker.io/other/*"),
        "rules[0].source (sync.yaml:6):", "duplicate key (first at line 4)"),
    # -- rules
    Bad("missing_name",
        doc("version: 1", "rules:", "  - source: docker.io/diamol/*",
            "    destination: registry.local:5000"),
        "rules[0].name (sync.yaml:3):", "is required"),
    Bad("missing_source", doc("version: 1", "rules:", "  - name: a",
                              "    destination: registry.local:5000"),
        "rules[0].source (sync.yaml:3):", "is required"),
    Bad("missing_destination", doc("version: 1", "rules:", "  - name: a",
                                   "    source: docker.io/diamol/*"),
        "rules[0].destination (sync.yaml:3):", "is required"),
    Bad("duplicate_rule_names", doc("version: 1", "rules:", RULE, RULE),
        "rules[1].name (sync.yaml:4):", "duplicate rule name 'a' (first at line 3)"),
    Bad("bad_rule_name",
        doc("version: 1", "rules:",
            "  - {name: 'my rule', source: docker.io/diamol/*, destination: registry.local:5000}"),
        "rules[0].name (sync.yaml:3):", "invalid rule name 'my rule'"),
    Bad("uppercase_source_repo",
        doc("version: 1", "rules:", "  - name: a", "    source: docker.io/Diamol/*",
            "    destination: registry.local:5000"),
        "rules[0].source (sync.yaml:4):", "invalid repository path segment 'Diamol'"),
    Bad("empty_source",
        doc("version: 1", "rules:", "  - name: a", "    source: ''",
            "    destination: registry.local:5000"),
        "rules[0].source (sync.yaml:4):", "expected a source such as docker.io/team/*"),
    Bad("destination_without_host",
        doc("version: 1", "rules:", "  - name: a", "    source: docker.io/diamol/*",
            "    destination: mirror/diamol"),
        "rules[0].destination (sync.yaml:5):", "must start with a registry host"),
    Bad("destination_onto_source",
        doc("version: 1", "rules:", "  - name: a", "    source: registry.local:5000/team/*",
            "    destination: registry.local:5000"),
        "rules[0] (sync.yaml:3):", "would copy each repository onto itself"),
    Bad("bad_platform", rule("    platforms: [linux/amd64, linux]"),
        "rules[0].platforms (sync.yaml:6):", "invalid platform 'linux': expected os/arch"),
    Bad("referrers_not_boolean", rule('    referrers: "yes"'),
        "rules[0].referrers (sync.yaml:6):", "expected true, false or a mapping such as"),
    # -- tags
    Bad("bad_include_regex", rule("    tags: {include: ['v(']}"),
        "rules[0].tags.include[0] (sync.yaml:6):", "invalid regex 'v('"),
    Bad("bad_exclude_regex", rule("    tags:", "      exclude: ['.*-rc', '[a-']"),
        "rules[0].tags.exclude[1] (sync.yaml:7):", "invalid regex '[a-'"),
    Bad("empty_include", rule("    tags: {include: []}"),
        "rules[0].tags.include (sync.yaml:6):", "selects no tags"),
    Bad("bad_semver", rule("    tags:", "      semver: '1.2'"),
        "rules[0].tags.semver (sync.yaml:7):", "invalid version range '1.2'"),
    Bad("semver_message_shows_valid_range", rule("    tags: {semver: 'newest'}"),
        "rules[0].tags.semver (sync.yaml:6):", "e.g. '>=1.0, <3'"),
    Bad("bad_immutable_regex", rule("    tags: {immutable: ['v1', 'v(']}"),
        "rules[0].tags.immutable[1] (sync.yaml:6):", "invalid regex 'v('"),
    Bad("bad_full_check", rule("    full_check: daily"),
        "rules[0].full_check (sync.yaml:6):", "invalid duration 'daily'"),
    Bad("latest_zero", rule("    tags: {latest: 0}"),
        "rules[0].tags.latest (sync.yaml:6):", "must be greater than or equal to 1"),
    # -- timing
    Bad("interval_wrong_type", rule("    interval: 5"),
        "rules[0].interval (sync.yaml:6):", "a duration such as 15m or 1h30m, got a number"),
    Bad("bad_duration", rule("    interval: 15x"),
        "rules[0].interval (sync.yaml:6):", "invalid duration '15x'"),
    Bad("zero_interval", rule("    interval: 0s"),
        "rules[0].interval (sync.yaml:6):", "must be longer than zero"),
    Bad("interval_and_schedule", rule("    interval: 15m", "    schedule: '*/15 * * * *'"),
        "rules[0].schedule (sync.yaml:7):", "set either interval or schedule, not both"),
    Bad("defaults_interval_and_schedule",
        doc("version: 1", "defaults:", "  interval: 1h", "  schedule: '0 * * * *'", "rules:", RULE),
        "defaults.schedule (sync.yaml:4):", "not both"),
    Bad("bad_cron", rule("    schedule: '61 * * * *'"),
        "rules[0].schedule (sync.yaml:6):", "invalid cron schedule '61 * * * *'"),
    Bad("cron_with_six_fields", rule("    schedule: '0 */5 * * * *'"),
        "rules[0].schedule (sync.yaml:6):", "expected 5 fields"),
    # -- prune
    Bad("prune_string", rule('    prune: "yes"'),
        "rules[0].prune (sync.yaml:6):", "expected true, false or a mapping"),
    Bad("max_fraction_zero", rule("    prune: {max_fraction: 0}"),
        "rules[0].prune.max_fraction (sync.yaml:6):", "must be greater than 0"),
    Bad("max_fraction_two", rule("    prune:", "      max_fraction: 2"),
        "rules[0].prune.max_fraction (sync.yaml:7):", "must be less than or equal to 1"),
    # -- registries
    Bad("bad_tls", registry("    tls: plain"),
        "registries.registry.local:5000.tls (sync.yaml:4):",
        "must be 'verify', 'insecure' or 'http'"),
    Bad("client_cert_without_key", registry(f"    client_cert: {THIS_FILE}"),
        "registries.registry.local:5000 (sync.yaml:3):",
        "client_cert and client_key must be set together"),
    Bad("missing_ca_file", registry("    ca_file: /nonexistent/ca.pem"),
        "registries.registry.local:5000.ca_file (sync.yaml:4):", "file not found: /nonexistent"),
    Bad("ca_file_not_a_certificate", registry(f"    ca_file: {THIS_FILE}"),
        "registries.registry.local:5000 (sync.yaml:3):", "cannot load TLS files"),
    Bad("max_concurrency_zero", registry("    max_concurrency: 0"),
        "registries.registry.local:5000.max_concurrency (sync.yaml:4):",
        "must be greater than or equal to 1"),
    Bad("max_concurrency_boolean", registry("    max_concurrency: true"),
        "registries.registry.local:5000.max_concurrency (sync.yaml:4):", "got true/false"),
    Bad("mirror_bad_host", registry("    mirrors: [mirror.gcr.io, 'https://mirror.gcr.io']",
                                    host="docker.io"),
        "registries.docker.io.mirrors[1] (sync.yaml:4):", "is not a registry host"),
    Bad("registry_key_not_a_host", registry("    tls: http", host="nginx"),
        "registries.nginx (sync.yaml:3):", "'nginx' is not a registry host"),
    Bad("duplicate_registry_hosts_after_normalising",
        doc("version: 1", "registries:", "  docker.io: {max_concurrency: 2}",
            "  Index.Docker.IO: {max_concurrency: 3}", "rules:", RULE),
        "registries.Index.Docker.IO (sync.yaml:4):", "same registry as 'docker.io' (line 3)"),
    Bad("credentials_without_password", registry("    credentials: {username: me}"),
        "registries.registry.local:5000.credentials (sync.yaml:4):",
        "set exactly one of password or password_file"),
    Bad("rate_limit_negative", registry("    rate_limit: {min_remaining: -1}"),
        "registries.registry.local:5000.rate_limit.min_remaining (sync.yaml:4):",
        "must be greater than or equal to 0"),
    # -- environment
    Bad("unset_env_var",
        doc("version: 1", "registries:", "  docker.io:", "    credentials:",
            "      username: me", "      password: ${HUB_TOKEN}", "rules:", RULE),
        "registries.docker.io.credentials.password (sync.yaml:6):",
        "environment variable HUB_TOKEN is not set"),
    Bad("malformed_env_reference", rule("    interval: ${INTERVAL"),
        "rules[0].interval (sync.yaml:6):", "invalid ${...} reference"),
    Bad("env_var_expands_to_bad_value", rule("    interval: ${INTERVAL}"),
        "rules[0].interval (sync.yaml:6):", "invalid duration '***'", env=(("INTERVAL", "soon"),)),
]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_CONFIGS, ids=[bad.id for bad in BAD_CONFIGS])
def test_bad_config_reports_key_path_line_and_reason(bad: Bad) -> None:
    message = config_error(bad.text, env=dict(bad.env))
    assert message.splitlines() == [message], f"expected exactly one problem:\n{message}"
    assert message.startswith(bad.where + " "), message
    assert bad.fragment in message
    assert "Value error" not in message and "pydantic" not in message


def test_bad_configs_cover_at_least_thirty_distinct_mistakes() -> None:
    assert len({bad.id for bad in BAD_CONFIGS}) == len(BAD_CONFIGS) >= 30


def test_every_problem_is_reported_in_line_order() -> None:
    text = doc(
        "version: 1",
        "rules:",
        "  - name: a",
        "    source: docker.io/diamol/*",
        "    destination: registry.local:5000",
        "    interval: 5",
        "    tags: {semver: 'x', latest: 0}",
        RULE,
    )
    assert config_error(text).splitlines() == [
        "rules[0].interval (sync.yaml:6): expected a duration such as 15m or 1h30m, got a number",
        "rules[0].tags.semver (sync.yaml:7): invalid version range 'x': write comparisons "
        "joined by commas, e.g. '>=1.0, <3', '==1.2.*' or '~=2.4'",
        "rules[0].tags.latest (sync.yaml:7): must be greater than or equal to 1",
        "rules[1].name (sync.yaml:8): duplicate rule name 'a' (first at line 3)",
    ]


def test_messages_use_the_config_file_basename(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "mirror.yaml"
    path.parent.mkdir()
    path.write_text(doc("version: 3", "rules:", RULE))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith("version (mirror.yaml:1): ")
    assert str(tmp_path) not in str(info.value)


def test_unreadable_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config"):
        load_config(tmp_path / "missing.yaml", env={})


# -- a good config -----------------------------------------------------------------------------

DESIGN_EXAMPLE = r"""
version: 1
registries:                       # optional per-host settings; a host not listed uses defaults
  docker.io:                      # docker.io means registry-1.docker.io; `nginx` means library/nginx
    credentials:                  # default: docker config.json (auths, credHelpers), else anonymous
      username: me
      password: ${HUB_TOKEN}      # ${VAR} expands from the environment
    rate_limit: {min_remaining: 20}   # pause source pulls when ratelimit-remaining falls below
    mirrors: [mirror.gcr.io]      # read-only fallbacks used when this host fails
    max_concurrency: 4
  registry.local:5000:
    tls: http                     # verify (default) | insecure (no cert check) | http (plain)
    ca_file: /etc/regsync/ca.pem  # also client_cert / client_key for mTLS
defaults: {interval: 1h, prune: false}
rules:
  - name: diamol
    source: docker.io/diamol/*    # one repository, or a glob: * = one path segment, ** = any depth
    destination: registry.local:5000   # repo path below the source registry is appended:
                                       # registry.local:5000/diamol/<repo>; `{path}` / `{name}`
                                       # placeholders shape it instead
    tags:
      include: ['.*']             # full-match regexes; default all
      exclude: ['.*-rc\d*']
      semver: '>=1.0, <3'         # optional range; non-semver tags drop out when set
      latest: 10                  # optional: only the N highest versions
    platforms: all                # or [linux/amd64, linux/arm64]
    referrers: true               # also copy signatures/SBOMs attached to synced images
    prune: false                  # delete destination tags in this rule's scope the source lost
    interval: 15m                 # or schedule: "*/15 * * * *"
"""  # noqa: E501


def test_design_example_parses_to_expected_values(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"  # ca_file must exist at load; its contents are read later
    ca.write_text("not parsed at load\n")
    text = DESIGN_EXAMPLE.replace("/etc/regsync/ca.pem", str(ca))
    config = parse_config(text, env={"HUB_TOKEN": SECRET})

    hub = config.registry("docker.io")
    assert hub.credentials is not None
    assert (hub.credentials.username, hub.credentials.secret()) == ("me", SECRET)
    assert hub.rate_limit is not None and hub.rate_limit.min_remaining == 20
    assert (hub.mirrors, hub.max_concurrency, hub.tls) == (["mirror.gcr.io"], 4, "verify")
    local = config.registry("registry.local:5000")
    assert (local.tls, local.ca_file, local.max_concurrency) == ("http", ca, 8)
    assert config.defaults.interval == timedelta(hours=1)
    assert config.defaults.prune == Prune(enabled=False)

    (diamol,) = config.rules
    assert diamol.name == "diamol"
    assert diamol.source == SourceSpec(registry="docker.io", pattern="diamol/*")
    assert diamol.destination == DestinationSpec(registry="registry.local:5000", template="")
    assert [p.pattern for p in diamol.tags.include] == [".*"]
    assert [p.pattern for p in diamol.tags.exclude] == [r".*-rc\d*"]
    assert (diamol.tags.semver, diamol.tags.latest) == (">=1.0, <3", 10)
    assert (diamol.platforms, diamol.referrers) == ("all", True)
    assert diamol.prune.enabled is False
    assert (diamol.interval, diamol.schedule) == (timedelta(minutes=15), None)


def test_design_example_as_written_only_lacks_its_ca_file() -> None:
    message = config_error(DESIGN_EXAMPLE, env={"HUB_TOKEN": SECRET})
    assert message.splitlines() == [
        "registries.registry.local:5000.ca_file (sync.yaml:13): file not found: /etc/regsync/ca.pem"
    ]


def test_repo_root_sync_yaml_loads_without_environment() -> None:
    config = load_config(REPO_ROOT / "sync.yaml", env={})
    (diamol,) = config.rules
    assert diamol.source == SourceSpec(registry="docker.io", pattern="diamol/*")
    assert diamol.destination.registry == "registry.local:5000"
    assert config.registry("registry.local:5000").tls == "http"


def test_rule_inherits_defaults_then_builtins() -> None:
    config = parse_config(
        doc(
            "version: 1",
            "defaults:",
            "  interval: 30m",
            "  prune: true",
            "  platforms: [linux/amd64, linux/arm64/v8]",
            "  referrers: true",
            "  tags: {exclude: ['.*-rc.*']}",
            "rules:",
            RULE,
        ),
        env={},
    )
    (rule_a,) = config.rules
    assert rule_a.interval == timedelta(minutes=30) and rule_a.schedule is None
    assert rule_a.prune == Prune(enabled=True)
    assert rule_a.platforms == ("linux/amd64", "linux/arm64/v8")
    assert rule_a.referrers is True
    assert [p.pattern for p in rule_a.tags.exclude] == [".*-rc.*"]


def test_builtin_defaults_when_nothing_is_set() -> None:
    (rule_a,) = parse_config(doc("version: 1", "rules:", RULE), env={}).rules
    assert (rule_a.interval, rule_a.schedule) == (timedelta(hours=1), None)
    assert (rule_a.platforms, rule_a.referrers, rule_a.prune) == ("all", False, Prune())
    assert rule_a.prune.enabled is False
    assert rule_a.tags == TagFilter()


def test_rule_overrides_only_the_tag_keys_it_sets() -> None:
    text = rule("    tags: {semver: '>=2', exclude: []}").replace(
        "rules:", "defaults: {tags: {exclude: [beta], latest: 3}}\nrules:"
    )
    (rule_a,) = parse_config(text, env={}).rules
    assert (rule_a.tags.semver, rule_a.tags.latest, rule_a.tags.exclude) == (">=2", 3, ())


def test_rule_schedule_replaces_default_interval() -> None:
    text = rule("    schedule: '*/15 * * * *'").replace(
        "rules:", "defaults: {interval: 5m}\nrules:"
    )
    (rule_a,) = parse_config(text, env={}).rules
    assert (rule_a.interval, rule_a.schedule) == (None, "*/15 * * * *")


def test_prune_mapping_enables_prune() -> None:
    (rule_a,) = parse_config(rule("    prune: {max_fraction: 0.2}"), env={}).rules
    assert rule_a.prune == Prune(enabled=True, allow_empty=False, max_fraction=0.2)


def test_prune_mapping_may_say_enabled_false() -> None:
    (rule_a,) = parse_config(rule("    prune: {enabled: false, allow_empty: true}"), env={}).rules
    assert (rule_a.prune.enabled, rule_a.prune.allow_empty) == (False, True)


def test_prune_true_keeps_guards_from_defaults() -> None:
    text = rule("    prune: true").replace(
        "rules:", "defaults: {prune: {enabled: false, max_fraction: 0.2}}\nrules:"
    )
    (rule_a,) = parse_config(text, env={}).rules
    assert rule_a.prune == Prune(enabled=True, max_fraction=0.2)


def test_env_var_expands_in_any_string_value() -> None:
    text = doc("version: 1", "rules:", "  - name: a", "    source: docker.io/${ORG}/*",
               "    destination: ${DEST}")  # fmt: skip
    (rule_a,) = parse_config(text, env={"ORG": "diamol", "DEST": "registry.local:5000"}).rules
    assert str(rule_a.source) == "docker.io/diamol/*"
    assert rule_a.destination.registry == "registry.local:5000"


def test_double_dollar_is_a_literal_dollar_and_lone_dollar_stays() -> None:
    text = registry(
        "    credentials:", "      username: me", "      password: 'p$$w$rd$${NOT_EXPANDED}'"
    )
    config = parse_config(text, env={})
    credentials = config.registry("registry.local:5000").credentials
    assert credentials is not None
    assert credentials.secret() == "p$w$rd${NOT_EXPANDED}"


def test_env_var_is_read_from_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGSYNC_TEST_ORG", "diamol")
    text = rule().replace("docker.io/diamol/*", "docker.io/${REGSYNC_TEST_ORG}/app")
    (rule_a,) = parse_config(text).rules
    assert rule_a.source.pattern == "diamol/app"


def _secret_config(*extra: str) -> str:
    return doc(
        "version: 1",
        "registries:",
        "  docker.io:",
        "    credentials: {username: me, password: '${HUB_TOKEN}'}",
        *extra,
        "rules:",
        RULE,
    )


def test_password_never_in_repr_or_str_of_config() -> None:
    config = parse_config(_secret_config(), env={"HUB_TOKEN": SECRET})
    assert SECRET not in repr(config) and SECRET not in str(config)
    assert SECRET not in repr(config.registry("docker.io"))


def test_password_never_in_error_text() -> None:
    message = config_error(_secret_config("    tls: bogus"), env={"HUB_TOKEN": SECRET})
    assert "registries.docker.io.tls (sync.yaml:5)" in message
    assert SECRET not in message


def test_password_of_wrong_type_is_not_echoed() -> None:
    text = registry("    credentials:", "      username: me", f"      password: [{SECRET}]")
    message = config_error(text)
    assert message == (
        "registries.registry.local:5000.credentials.password (sync.yaml:6): "
        "expected a string, got a list"
    )


def test_yaml_error_on_a_password_line_does_not_quote_it() -> None:
    text = registry("    credentials:", "      username: me", f'      password: "{SECRET}')
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_password_file_is_read_lazily_and_stripped(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    text = registry("    credentials: {username: me, password_file: token}")
    (tmp_path / "sync.yaml").write_text(text)
    credentials = load_config(tmp_path / "sync.yaml", env={}).registry("registry.local:5000")
    assert credentials.credentials is not None
    with pytest.raises(ConfigError, match=f"cannot read password_file {secret_file}"):
        credentials.credentials.secret()
    secret_file.write_text(f"  {SECRET}\n")
    assert credentials.credentials.secret() == SECRET


def test_unreadable_password_file_error_names_file_not_contents(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_bytes(b"\xff\xfe" + SECRET.encode())
    text = registry(f"    credentials: {{username: me, password_file: {secret_file}}}")
    credentials = parse_config(text, env={}).registry("registry.local:5000").credentials
    assert credentials is not None
    with pytest.raises(ConfigError) as info:
        credentials.secret()
    assert str(secret_file) in str(info.value)
    assert SECRET not in str(info.value) and info.value.__cause__ is None


def test_relative_file_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))  # read (and checked) at load
    (tmp_path / "sync.yaml").write_text(registry("    ca_file: ca.pem"))
    config = load_config(tmp_path / "sync.yaml", env={})
    assert config.registry("registry.local:5000").ca_file == tmp_path / "ca.pem"


# -- tags ---------------------------------------------------------------------------------------


def test_include_and_exclude_are_full_matches() -> None:
    tags = TagFilter.model_validate({"include": ["1", "2.*"], "exclude": ["rc", r".*-beta\d*"]})
    assert tags.selects("1") and not tags.selects("1.2")
    assert tags.selects("2.0") and not tags.selects("12.0")
    assert tags.selects("2.0-rc1"), "exclude 'rc' must match the whole tag, not a substring"
    assert not tags.selects("2.0-beta3")


def test_default_tag_filter_selects_every_tag() -> None:
    assert all(TagFilter().selects(tag) for tag in ("latest", "1.0", "sha256-abc.sig"))


# -- registries and rule selection ---------------------------------------------------------------


def test_registry_lookup_normalises_hosts() -> None:
    text = doc("version: 1", "registries:", "  index.docker.io: {max_concurrency: 2}",
               "  Registry.Local:5000: {tls: http}", "rules:", RULE)  # fmt: skip
    config = parse_config(text, env={})
    assert set(config.registries) == {"docker.io", "registry.local:5000"}
    for alias in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        assert config.registry(alias).max_concurrency == 2
    assert config.registry("registry.local:5000").tls == "http"
    assert config.registry("ghcr.io") == RegistryConfig()


def _two_rules() -> Config:
    second = RULE.replace("name: a", "name: b").replace(":5000}", ":5000/b}")
    return parse_config(doc("version: 1", "rules:", RULE, second), env={})


def test_select_rules_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        _two_rules().select_rules(["a", "nope"])
    assert str(info.value) == "unknown rule 'nope'; the config has: a, b"


def test_select_rules_returns_named_rules_in_config_order_or_all() -> None:
    config = _two_rules()
    assert [r.name for r in config.select_rules(["b", "a"])] == ["a", "b"]
    assert [r.name for r in config.select_rules(["b"])] == ["b"]
    assert config.select_rules([]) == config.rules


# -- YAML details -------------------------------------------------------------------------------


def test_merge_keys_are_overridden_by_own_keys_without_a_duplicate_error() -> None:
    text = doc(
        "version: 1",
        "rules:",
        "  - &first {name: a, source: docker.io/diamol/*, destination: registry.local:5000}",
        "  - {<<: *first, name: b, destination: registry.local:5000/b}",
    )
    first, second = parse_config(text, env={}).rules
    assert (first.name, second.name) == ("a", "b")
    assert second.source == first.source
    assert second.destination == DestinationSpec(registry="registry.local:5000", template="b")


def test_recursive_alias_is_an_error_not_a_hang() -> None:
    message = config_error(doc("version: 1", "rules: &r [*r]"))
    assert "rules[0] (sync.yaml:2): alias refers to itself" in message


# -- values -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
    ],
)
def test_parse_duration_accepts_units_largest_first(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "15", "1.5h", "30m1h", "1w", "h", "-5m", "1 h"])
def test_parse_duration_rejects_other_forms(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_models_are_frozen() -> None:
    config = _two_rules()
    with pytest.raises(ValidationError):
        config.rules[0].name = "changed"  # type: ignore[misc]


def test_loading_touches_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("config loading opened the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert load_config(REPO_ROOT / "sync.yaml", env={}).rules[0].name == "diamol"


# -- bounds: hostile YAML is refused quickly, with the line ---------------------------------------


def _alias_bomb(levels: int = 9) -> str:
    """The "billion laughs": each level is a list of nine aliases of the one before."""
    lines = ["version: 1", "rules:", RULE, 'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol"]']
    for n in range(1, levels):
        lines.append(f"l{n}: &l{n} [{','.join([f'*l{n - 1}'] * 9)}]")
    return doc(*lines)


@pytest.mark.timeout(5)
def test_alias_bomb_is_refused_naming_the_line() -> None:
    message = config_error(_alias_bomb())
    assert message.startswith("sync.yaml:"), message
    assert "aliases expand the document beyond 10000 values" in message
    line = int(message.split(":")[1])
    assert 5 <= line <= 12, message  # somewhere in the bomb's lines, not line 1


@pytest.mark.timeout(5)
def test_merge_key_bomb_is_refused() -> None:
    lines = ["version: 1", "rules:", RULE, "m0: &m0 {a: 1, b: 2}"]
    lines += [f"m{n}: &m{n} {{<<: [*m{n - 1}, *m{n - 1}], k{n}: 1}}" for n in range(1, 40)]
    assert "aliases expand the document beyond 10000 values" in config_error(doc(*lines))


@pytest.mark.timeout(20)
def test_alias_bomb_validate_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "sync.yaml"
    path.write_text(_alias_bomb(12))
    proc = run_regsync("validate", "-c", path, timeout=15)
    assert proc.returncode == 2, proc.stderr
    assert "aliases expand the document beyond 10000 values" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (doc("version: 1", "rules: " + "[" * 100_000 + "]" * 100_000), 2),
        (doc("version: 1", "rules:", "  - " + "{a: " * 100_000 + "1" + "}" * 100_000), 3),
        # shallow as written, deep once the aliases are followed
        (
            doc(
                "version: 1",
                "a0: &a0 [1]",
                *[f"a{n}: &a{n} [*a{n - 1}]" for n in range(1, 500)],
                "rules:",
                RULE,
            ),
            0,
        ),
    ],
    ids=["flow-lists", "flow-mappings", "alias-chain"],
)
@pytest.mark.timeout(10)
def test_deep_nesting_is_a_config_error(text: str, line: int) -> None:
    message = config_error(text)
    assert "nested deeper than 64 levels" in message, message
    if line:
        assert message.startswith(f"sync.yaml:{line}:"), message


@pytest.mark.timeout(20)
def test_deep_nesting_validate_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "sync.yaml"
    path.write_text(doc("version: 1", "rules: " + "[" * 100_000 + "]" * 100_000))
    proc = run_regsync("validate", "-c", path, timeout=15)
    assert (proc.returncode, proc.stderr.strip()) == (
        2,
        "regsync: sync.yaml:2: nested deeper than 64 levels",
    )


def test_oversized_config_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sync.yaml"
    path.write_text(rule() + "# padding\n" * 200_000)
    with pytest.raises(ConfigError, match=r"sync.yaml: the config is over 1048576 bytes"):
        load_config(path, env={})


@pytest.mark.parametrize(
    ("regex", "reason"),
    [("(?=v)v.*", "invalid perl operator: (?="), (r"(a)\1", r"invalid escape sequence: \1")],
    ids=["lookahead", "backreference"],
)
def test_regex_re2_cannot_run_is_refused_with_key_path_and_line(regex: str, reason: str) -> None:
    message = config_error(
        rule("    tags:", "      include:", "        - '1.*'", f"        - '{regex}'")
    )
    assert message == (
        f"rules[0].tags.include[1] (sync.yaml:9): invalid regex {regex!r}: {reason}"
        " (regexes use RE2 syntax, as in Go: no lookaround or backreferences)"
    )


@pytest.mark.timeout(5)
def test_catastrophic_regex_is_linear() -> None:
    tags = TagFilter.model_validate({"include": ["(a+)+", "x+"], "exclude": ["(x+x+)+y"]})
    assert not tags.selects("a" * 40 + "!")
    assert tags.selects("a" * 40)
    assert tags.selects("x" * 5000)


def test_full_check_defaults_to_a_day_and_rules_inherit_it_or_override_it() -> None:
    """`full_check` (rule or defaults key, default 24h) and `tags.immutable` (full-match)."""
    text = doc(
        "version: 1",
        "defaults: {full_check: 6h}",
        "rules:",
        "  - {name: a, source: docker.io/x/a, destination: registry.local:5000}",
        "  - name: b",
        "    source: docker.io/x/b",
        "    destination: registry.local:5000",
        "    full_check: 30m",
        "    tags: {immutable: ['v\\d+\\.\\d+\\.\\d+']}",
    )
    a, b = parse_config(text).rules
    assert (a.full_check, b.full_check) == (timedelta(hours=6), timedelta(minutes=30))
    assert a.tags.immutable == ()
    (pattern,) = b.tags.immutable
    assert pattern.fullmatch("v1.2.3") and not pattern.fullmatch("v1.2.3-rc1")
    plain = parse_config(doc("version: 1", "rules:", RULE)).rules[0]
    assert plain.full_check == timedelta(hours=24)
