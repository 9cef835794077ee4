"""proxy.ini parsing: every rule, every error naming line / section / key, interpolation, secrets,
the shipped proxy.ini, and the fuzz invariant (any text -> ProxyConfig or ConfigError)."""

# The catalogues keep one case per line (# fmt: off), so some lines run past 100 columns.
# ruff: noqa: E501
from __future__ import annotations

import configparser
import contextlib
import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trioproxy.config import (
    describe,
    interpolate,
    is_loopback,
    load_config,
    locate_lines,
    parse_config,
    parse_config_mapping,
    parse_listen,
)
from trioproxy.config_types import ProxySettings, UpstreamConfig
from trioproxy.errors import ConfigError
from trioproxy.routing import Router
from trioproxy.translate.base import ModelDefaults

if TYPE_CHECKING:
    from trioproxy.config_types import ProxyConfig

SHIPPED = Path(__file__).parent.parent / "proxy.ini"
DEMO = "[upstream:demo]\ntype = demo\n\n[model:demo]\nupstream = demo\n"
SECRET = "sk-secret-0123456789abcdefghij"  # must never show up in a message, repr or describe()
OTHER_SECRET = "sk-other-0123456789abcdefghij"


def parse(text: str, environ: dict[str, str] | None = None, **kw: object) -> ProxyConfig:
    return parse_config(text, environ or {}, **kw)  # type: ignore[arg-type]


def error_of(text: str, environ: dict[str, str] | None = None, **kw: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, environ, **kw)
    message = info.value.message
    assert SECRET not in message and OTHER_SECRET not in message
    return message


# --- defaults and every key ----------------------------------------------------------------------


def test_an_empty_text_gives_the_documented_defaults_and_a_warning() -> None:
    config = parse("")
    assert config.proxy == ProxySettings()
    assert config.upstreams == {}
    assert config.models == ()
    assert config.warnings == ("no [model:NAME] section: every chat request will answer 404",)


def test_every_proxy_key_is_read_into_proxy_settings() -> None:
    config = parse(
        """
[proxy]
listen = [::1]:9000
api_keys = alice:sk-alice-0123456789abcdef
keepalive_interval = 2.5
max_body_bytes = 1000
drain_timeout = 0
write_timeout = 7
log_level = DEBUG
log_format = json
metrics = off
metrics_key = metrics-key-0123456789
ws_max_in_flight = 3
ws_max_message_bytes = 4096
max_messages = 10
max_tools = 0
max_json_depth = 9
cors_origins = https://app.example.com/, http://localhost:3000
"""
        + DEMO
    )
    proxy = config.proxy
    assert (proxy.listen_host, proxy.listen_port) == ("::1", 9000)
    assert [(k.name, k.key) for k in proxy.keys] == [("alice", "sk-alice-0123456789abcdef")]
    assert proxy.keepalive_interval == 2.5
    assert proxy.max_body_bytes == 1000
    assert proxy.drain_timeout == 0
    assert proxy.write_timeout == 7
    assert proxy.log_level == "debug"
    assert proxy.log_format == "json"
    assert proxy.metrics is False
    assert proxy.metrics_key == "metrics-key-0123456789"
    assert proxy.ws_max_in_flight == 3
    assert proxy.ws_max_message_bytes == 4096
    assert proxy.max_messages == 10
    assert proxy.max_tools == 0
    assert proxy.max_json_depth == 9
    assert proxy.cors_origins == ("https://app.example.com", "http://localhost:3000")


def test_every_upstream_key_is_read_into_upstream_config() -> None:
    config = parse(
        """
[upstream:claude]
type = anthropic
base_url = https://gateway.example.com/anthropic/
api_key = sk-ant-0123456789
connect_timeout = 3
first_byte_timeout = 20
read_timeout = 30.5
total_timeout = 900
max_retries = 0
retry_max_wait = 0
verify_tls = no
ca_file = /etc/ssl/corp.pem
https_proxy = http://user:pw@proxy.internal:3128
max_idle_connections = 0
idle_expiry = 5
anthropic_version = 2024-01-01
anthropic_beta = beta-one, beta-two
headers = X-Title: my app

[model:claude]
upstream = claude
"""
    )
    assert config.upstreams["claude"] == UpstreamConfig(
        name="claude",
        type="anthropic",
        base_url="https://gateway.example.com/anthropic",
        api_key="sk-ant-0123456789",
        connect_timeout=3.0,
        first_byte_timeout=20.0,
        read_timeout=30.5,
        total_timeout=900.0,
        max_retries=0,
        retry_max_wait=0.0,
        verify_tls=False,
        ca_file="/etc/ssl/corp.pem",
        https_proxy="http://user:pw@proxy.internal:3128",
        max_idle_connections=0,
        idle_expiry=5.0,
        anthropic_version="2024-01-01",
        anthropic_beta=("beta-one", "beta-two"),
        extra_headers=(("x-title", "my app"),),
    )


def test_every_model_key_is_read_and_system_prompt_may_span_lines() -> None:
    config = parse(
        """
[upstream:a]
type = demo
[upstream:b]
type = demo

[model:gpt-*]
upstream = b, a
upstream_model = gpt-5
max_tokens = 100
reasoning_effort = high
system_prompt = Be brief.
    Answer in French.

    Never apologise.
"""
    )
    (model,) = config.models
    assert model.name == "gpt-*" and model.is_pattern
    assert model.upstreams == ("b", "a")
    assert model.upstream_model == "gpt-5"
    assert model.defaults == ModelDefaults(
        max_tokens=100,
        reasoning_effort="high",
        system_prompt="Be brief.\nAnswer in French.\n\nNever apologise.",
    )


def test_retry_max_wait_defaults_to_three_seconds_as_the_shipped_ini_says() -> None:
    # A proxy must not hold a client silently for long (issue 17): the budget is short.
    upstream = parse("[upstream:d]\ntype = demo\n").upstreams["d"]
    assert upstream.retry_max_wait == 3.0 == UpstreamConfig(name="x", type="demo").retry_max_wait
    quoted = re.search(r"^; retry_max_wait = (\S+) ", SHIPPED.read_text(), flags=re.MULTILINE)
    assert quoted is not None and float(quoted[1]) == upstream.retry_max_wait
    text = SHIPPED.read_text().replace("; retry_max_wait = 3", "retry_max_wait = 2.5")
    assert parse_config(text, {}).upstreams["anthropic"].retry_max_wait == 2.5


def test_upstream_types_get_their_default_base_url_and_demo_needs_no_key() -> None:
    config = parse(
        """
[upstream:a]
type = anthropic
api_key = k-0123456789abcdef
[upstream:o]
type = openai-responses
api_key = k-0123456789abcdef
[upstream:d]
type = demo
[model:m]
upstream = a, o, d
"""
    )
    assert config.upstreams["a"].base_url == "https://api.anthropic.com"
    assert config.upstreams["o"].base_url == "https://api.openai.com/v1"
    assert config.upstreams["d"].base_url == ""
    assert all(u.enabled for u in config.upstreams.values())
    assert config.warnings == ()


def test_keys_are_case_insensitive_and_section_names_are_not() -> None:
    config = parse(
        "[proxy]\nLISTEN = 127.0.0.1:1\n[upstream:Demo]\nTYPE = demo\n[model:X]\nupstream = Demo\n"
    )
    assert config.proxy.listen_port == 1
    assert list(config.upstreams) == ["Demo"]
    assert "unknown section [Proxy]" in error_of("[Proxy]\n")


def test_comments_whole_line_and_inline_after_whitespace_only() -> None:
    config = parse(
        """
# a comment
; another
[upstream:demo]   ; trailing comment on a header
type = demo       # hash comment
[model:a;b]
upstream = demo ;comment
upstream_model = x;y
"""
    )
    (model,) = config.models
    assert model.name == "a;b"  # no whitespace before ';': part of the name (configparser's rule)
    assert model.upstreams == ("demo",)
    assert model.upstream_model == "x;y"


def test_choices_are_case_insensitive_and_an_empty_optional_value_means_unset() -> None:
    config = parse(
        "[upstream:a]\ntype = Anthropic\napi_key = k\nca_file =\n"
        "[model:m]\nupstream = a\nreasoning_effort =\nupstream_model =\nmax_tokens =\n"
        "[model:n]\nupstream = a\nreasoning_effort = HIGH\n"
    )
    assert config.upstreams["a"].type == "anthropic"
    assert config.upstreams["a"].ca_file is None
    assert config.models[0].defaults == ModelDefaults()
    assert config.models[0].upstream_model is None
    assert config.models[1].defaults.reasoning_effort == "high"


def test_first_byte_and_total_timeout_accept_none() -> None:
    ini = "[upstream:d]\ntype = demo\nfirst_byte_timeout = none\ntotal_timeout =\n[model:m]\nupstream = d\n"
    upstream = parse(ini).upstreams["d"]
    assert upstream.first_byte_timeout is None and upstream.total_timeout is None


def test_numbers_may_be_written_with_an_exponent() -> None:
    assert (
        parse("[proxy]\nkeepalive_interval = 1e-05\nwrite_timeout = 2E2\n").proxy.keepalive_interval
        == 1e-05
    )


# --- interpolation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("pre-${A}-post", {"A": "x"}, "pre-x-post"),
        ("${A:-dflt}", {}, "dflt"),
        ("${A:-dflt}", {"A": ""}, "dflt"),  # POSIX ':-': unset or empty
        ("${A:-dflt}", {"A": "set"}, "set"),
        ("${A:-}", {}, ""),
        (
            "${A:-${B}}",
            {"B": "b"},
            "${B}",
        ),  # the default is not interpolated; it ends at the first }
        ("$$", {}, "$"),
        ("$${A}", {"A": "x"}, "${A}"),
        ("cost: $5 and 100%", {}, "cost: $5 and 100%"),  # a lone $ is literal, % means nothing
        ("${A}${B}", {"A": "1", "B": "2"}, "12"),
        ("${A}", {"A": ""}, ""),  # set but empty: no error
    ],
)
def test_interpolate(value: str, environ: dict[str, str], expected: str) -> None:
    assert interpolate(value, environ)[0] == expected


def test_interpolate_reports_each_reference_and_its_state() -> None:
    _, refs = interpolate("${A:-x}${B:-y}${C}", {"B": "", "C": "c"})
    assert [(r.name, r.state, r.defaulted) for r in refs] == [
        ("A", "unset", True),
        ("B", "empty", True),
        ("C", "set", False),
    ]


def test_unset_variable_without_default_names_variable_section_key_and_line() -> None:
    message = error_of("\n[proxy]\nlog_level = info\nlisten = ${BIND_ADDRESS}\n")
    assert message == (
        "proxy.ini line 4: [proxy] listen uses ${BIND_ADDRESS}, but BIND_ADDRESS is not set in "
        "the environment; set it, or write ${BIND_ADDRESS:-default} to make it optional"
    )


def test_interpolated_values_are_used() -> None:
    config = parse("[proxy]\nlisten = ${HOST:-127.0.0.1}:${PORT}\n" + DEMO, {"PORT": "9999"})
    assert (config.proxy.listen_host, config.proxy.listen_port) == ("127.0.0.1", 9999)


@pytest.mark.parametrize("value", ["${A", "${}", "${1A}", "${A B}", "${A:default}", "${A-x}"])
def test_malformed_references_are_errors_that_do_not_echo_the_value(value: str) -> None:
    message = error_of(f"[proxy]\nlog_level = {value}{SECRET}\n")
    assert message.startswith("proxy.ini line 2: [proxy] log_level has ")


@pytest.mark.parametrize(
    "line",
    [
        "[proxy]\nlog_level = ${V}",
        "[proxy]\nmax_tools = ${V}",
        "[proxy]\nlisten = ${V}:80",
        "[upstream:a]\ntype = ${V}",
        "[upstream:a]\ntype = demo\nbase_url = ${V}",
    ],
)
def test_a_bad_value_from_the_environment_is_shown_as_its_reference(line: str) -> None:
    message = error_of(line + "\n", {"V": SECRET})
    assert "${V}" in message


def test_malformed_reference_in_api_key_does_not_show_its_default() -> None:
    message = error_of(f"[upstream:a]\ntype = anthropic\napi_key = ${{1X:-{SECRET}}}\n")
    assert message.startswith("proxy.ini line 3: [upstream:a] api_key has a malformed ${...}")


# --- line numbers -------------------------------------------------------------------------------------


def test_locate_lines_finds_headers_and_keys_like_configparser() -> None:
    text = (
        "; comment\n"  # 1
        "[proxy]\n"  # 2
        "  Listen = 1\n"  # 3 indented key, first after a header: a key, not a continuation
        "api_keys = a,\n"  # 4
        "    b = c\n"  # 5 continuation of api_keys, not a key
        "    [not_a_section]\n"  # 6 continuation too
        "\n"  # 7
        "[model:x]  ; note\n"  # 8
        "upstream=demo\n"  # 9
        "#key = 1\n"  # 10
    )
    lines = locate_lines(text)
    assert lines.sections == {"proxy": 2, "model:x": 8}
    assert lines.keys == {
        ("proxy", "listen"): 3,
        ("proxy", "api_keys"): 4,
        ("model:x", "upstream"): 9,
    }


def test_locate_lines_strips_comments_in_configparser_rounds() -> None:
    # ';' qualifies in round 1 (its first occurrence), '#' only in round 2, so configparser cuts
    # at the ';' and "b #c" survives: the '=' before ';' makes it a key; a naive scan would cut at
    # " #" and see no '='.
    text = "[s]\nb#x #c = 1 ;d\n"
    assert locate_lines(text).keys == {("s", "b#x #c"): 2}
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), delimiters=("=",))
    parser.read_string(text)
    assert dict(parser["s"]) == {"b#x #c": "1"}


def test_locate_lines_with_crlf_and_blank_lines_inside_values() -> None:
    text = "[a]\r\nx = 1\r\n\r\n  more\r\ny = 2\r\n"
    assert locate_lines(text).keys == {("a", "x"): 2, ("a", "y"): 5}


ini_line = st.one_of(
    st.sampled_from(["[proxy]", "[upstream:d]", "[model:m]", "[x]", "", "; c", "# c", "  ; c"]),
    st.builds(
        "{}{}{}={}{}".format,
        st.sampled_from(["", " ", "    "]),
        st.sampled_from(["a", "B", "listen", "k;x", "type", "b#x #c", "[h]"]),
        st.sampled_from(["", " "]),
        st.sampled_from(["", " v", "v ;c", " [s]", "x#y", "1 ;d #e", "v#1 #2 ;3"]),
        st.sampled_from(["", " # c"]),
    ),
    st.builds(
        "{}{}".format, st.sampled_from(["  ", "\t"]), st.sampled_from(["cont", "[s]", "k = v"])
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ini_line, max_size=12))
def test_locate_lines_agrees_with_configparser(lines: list[str]) -> None:
    text = "\n".join(lines)
    parser = configparser.ConfigParser(
        interpolation=None,
        inline_comment_prefixes=(";", "#"),
        delimiters=("=",),
        strict=False,
        default_section="\n",
    )
    try:
        parser.read_string(text)
    except configparser.Error:
        return
    located = locate_lines(text)
    physical = text.split("\n")
    for section in parser.sections():
        assert physical[located.sections[section] - 1].strip().startswith(f"[{section}]")
        for key in parser[section]:
            line = physical[located.keys[(section, key)] - 1]
            assert line.strip().lower().startswith(key)


# --- errors: each names the line, the section and the key ------------------------------------------


# fmt: off
ERRORS = [
    ("\n\n[proxy]\nlistn = 1\n", "proxy.ini line 4: unknown key 'listn' in [proxy]; did you mean 'listen'?"),
    ("[proxy]\nzzz = 1\n", "proxy.ini line 2: unknown key 'zzz' in [proxy]; known keys: listen, api_keys"),
    ("[upstream:a]\ntype = demo\ntimeout = 3\n", "line 3: unknown key 'timeout' in [upstream:a]"),
    ("[model:m]\nupstreams = a\n", "line 2: unknown key 'upstreams' in [model:m]; did you mean 'upstream'?"),
    ("[key:k]\nkeys = x\n", "line 2: unknown key 'keys' in [key:k]; did you mean 'key'?"),
    ("\n[upstreams:demo]\n", "proxy.ini line 2: unknown section [upstreams:demo]; did you mean [upstream:demo]?"),
    ("[prxy]\n", "proxy.ini line 1: unknown section [prxy]; did you mean [proxy]?"),
    ("[DEFAULT]\nlisten = 1\n", "proxy.ini line 1: unknown section [DEFAULT]"),
    ("[whatever]\n", "sections are [proxy], [upstream:NAME], [model:NAME], [key:NAME]"),
    ("[upstream]\n", "proxy.ini line 1: [upstream] needs a name: [upstream:NAME]"),
    ("[model:]\n", "proxy.ini line 1: [model:] needs a name: [model:NAME]"),
    ("[proxy:x]\n", "proxy.ini line 1: [proxy:x]: the proxy section takes no name; write [proxy]"),
    ("[upstream:a b]\ntype = demo\n", "line 1: [upstream:a b]: a upstream name is 1 to 64 letters"),
    ("[model:a b]\n", "line 1: [model:a b]: a model name cannot contain spaces"),
    ("[proxy]\n\n[proxy]\n", "proxy.ini line 3: section [proxy] appears twice; merge the two"),
    ("[proxy]\nlisten = a:1\nLISTEN = b:2\n", "proxy.ini line 3: key 'listen' appears twice in [proxy]"),
    ("listen = 1\n", "proxy.ini line 1: expected a section header such as [proxy]"),
    ("[proxy]\nlisten 127.0.0.1:1\n", "proxy.ini line 2: cannot read this line: expected 'key = value'"),
    ("[proxy]\nkeepalive_interval = soon\n", "line 2: [proxy] keepalive_interval must be a number of seconds > 0, got 'soon'"),
    ("[proxy]\nkeepalive_interval = 0\n", "line 2: [proxy] keepalive_interval must be a number of seconds > 0, got '0'"),
    ("[proxy]\ndrain_timeout = -1\n", "line 2: [proxy] drain_timeout must be a number of seconds >= 0, got '-1'"),
    ("[proxy]\nwrite_timeout = inf\n", "[proxy] write_timeout must be a number of seconds > 0, got 'inf'"),
    ("[proxy]\nwrite_timeout = 1e400\n", "[proxy] write_timeout must be a number of seconds > 0, got '1e400'"),
    ("[proxy]\nwrite_timeout = nan\n", "[proxy] write_timeout must be a number of seconds > 0, got 'nan'"),
    ("[proxy]\nmax_body_bytes = 10MB\n", "line 2: [proxy] max_body_bytes must be a whole number >= 1, got '10MB'"),
    ("[proxy]\nmax_body_bytes = 0\n", "[proxy] max_body_bytes must be a whole number >= 1, got '0'"),
    ("[proxy]\nmax_tools = 1.5\n", "[proxy] max_tools must be a whole number >= 0, got '1.5'"),
    ("[proxy]\nmax_json_depth = 3\n", "[proxy] max_json_depth must be a whole number >= 8, got '3'"),
    ("[proxy]\nws_max_in_flight = \u0661\n", "[proxy] ws_max_in_flight must be a whole number >= 1"),
    ("[proxy]\nmax_messages = 99999999999999999999999\n", "[proxy] max_messages must be a whole number"),
    ("[proxy]\nlisten = 127.0.0.1:70000\n", "line 2: [proxy] listen must end in a port from 0 to 65535, got '127.0.0.1:70000'"),
    ("[proxy]\nlisten = 127.0.0.1:http\n", "[proxy] listen must end in a port from 0 to 65535"),
    ("[proxy]\nlisten = 127.0.0.1\n", "line 2: [proxy] listen must be HOST:PORT (e.g. 127.0.0.1:8003"),
    ("[proxy]\nlisten = :8003\n", "[proxy] listen must be HOST:PORT"),
    ("[proxy]\nlisten = ::1:8003\n", "[proxy] listen must put an IPv6 address in brackets ([::1]:8003)"),
    ("[proxy]\nlisten = [::g]:8003\n", "[proxy] listen has '::g' in brackets, which is not an IPv6 address"),
    ("[proxy]\nlisten = [::1]8003\n", "[proxy] listen must be HOST:PORT"),
    ("[proxy]\nlisten = bad_host!:80\n", "[proxy] listen has 'bad_host!', which is neither an IP address nor a host name"),
    ("[proxy]\nlog_level = verbose\n", "line 2: [proxy] log_level must be one of debug | info | warning | error | critical, got 'verbose'"),
    ("[proxy]\nlog_format = jsn\n", "[proxy] log_format must be one of text | json, got 'jsn'; did you mean 'json'?"),
    ("[proxy]\nmetrics = maybe\n", "line 2: [proxy] metrics must be true or false (or yes/no, on/off, 1/0), got 'maybe'"),
    ("[proxy]\ncors_origins = https://a.example.com/app\n", "line 2: [proxy] cors_origins must list origins like"),
    ("[proxy]\ncors_origins = ftp://a.example.com\n", "[proxy] cors_origins must list origins like"),
    ("[upstream:a]\nbase_url = https://x\n", "proxy.ini line 1: [upstream:a] needs type = one of anthropic | openai-responses | openai-chat | demo"),
    ("[upstream:a]\ntype = anthropc\n", "line 2: [upstream:a] type must be one of anthropic | openai-responses | openai-chat | demo, got 'anthropc'; did you mean 'anthropic'?"),
    ("[upstream:a]\ntype = openai-chat\n", "proxy.ini line 1: [upstream:a] needs base_url for type = openai-chat"),
    ("[upstream:a]\ntype = openai-chat\nbase_url =\n", "[upstream:a] needs base_url for type = openai-chat"),
    ("[upstream:a]\ntype = anthropic\nbase_url = api.anthropic.com\n", "line 3: [upstream:a] base_url must start with https:// or http:// and name a host"),
    ("[upstream:a]\ntype = anthropic\nbase_url = ftp://x.example.com\n", "[upstream:a] base_url must start with https:// or http://"),
    ("[upstream:a]\ntype = openai-chat\nbase_url = https://x.example.com/v1?key=1\n", "line 3: [upstream:a] base_url cannot have a ?query or #fragment"),
    ("[upstream:a]\ntype = openai-chat\nbase_url = https://x.example.com/v1#frag\n", "[upstream:a] base_url cannot have a ?query or #fragment"),
    ("[upstream:a]\ntype = openai-chat\nbase_url = https://x.example.com:99999/v1\n", "[upstream:a] base_url is not a valid URL"),
    ("[upstream:a]\ntype = openai-chat\nbase_url = https://u:p@x.example.com/v1\n", "[upstream:a] base_url cannot hold credentials"),
    ("[upstream:a]\ntype = demo\nanthropic_version = 1\n", "line 3: [upstream:a] anthropic_version applies only to type = anthropic (this upstream is demo)"),
    ("[upstream:a]\ntype = anthropic\ndemo_delay = 1\n", "line 3: [upstream:a] demo_delay applies only to type = demo"),
    ("[upstream:a]\ntype = demo\nverify_tls = sure\n", "[upstream:a] verify_tls must be true or false"),
    ("[upstream:a]\ntype = demo\nmax_retries = -1\n", "[upstream:a] max_retries must be a whole number >= 0, got '-1'"),
    ("[upstream:a]\ntype = demo\nfirst_byte_timeout = 0\n", "[upstream:a] first_byte_timeout must be a number of seconds > 0"),
    ("[upstream:a]\ntype = demo\nhttps_proxy = proxy:3128\n", "line 3: [upstream:a] https_proxy must start with https:// or http://"),
    ("[upstream:a]\ntype = demo\nheaders = no-colon-here\n", "line 3: [upstream:a] headers must be 'Name: value' entries"),
    ("[upstream:a]\ntype = demo\nheaders = Bad Name: x\n", "[upstream:a] headers must be 'Name: value' entries"),
    ("[upstream:a]\ntype = demo\nheaders = Authorization: Bearer x\n", "[upstream:a] headers cannot set Authorization: trioproxy sets it"),
    ("[upstream:a]\ntype = demo\nheaders = Content-Length: 1\n", "[upstream:a] headers cannot set Content-Length"),
    ("[upstream:a]\ntype = demo\nheaders =\n  X-A: 1\n  x-a: 2\n", "[upstream:a] headers sets x-a twice"),
    ("[model:m]\nmax_tokens = 1\n", "proxy.ini line 1: [model:m] needs upstream = NAME"),
    ("[model:m]\nupstream = ,\n", "line 2: [model:m] upstream is empty"),
    ("[upstream:anthropic]\ntype = demo\n[model:m]\nupstream = antropic\n", "line 4: [model:m] upstream names upstream 'antropic', which is not defined; did you mean 'anthropic'? defined upstreams: anthropic"),
    ("[model:m]\nupstream = ghost\n", "[model:m] upstream names upstream 'ghost', which is not defined; defined upstreams: none"),
    ("[upstream:d]\ntype = demo\n[model:m]\nupstream = d, d\n", "[model:m] upstream names upstream 'd' twice"),
    ("[upstream:d]\ntype = demo\n[model:m]\nupstream = d\nmax_tokens = 0\n", "line 5: [model:m] max_tokens must be a whole number >= 1, got '0'"),
    ("[upstream:d]\ntype = demo\n[model:m]\nupstream = d\nreasoning_effort = hihg\n", "line 5: [model:m] reasoning_effort must be one of none | minimal | low | medium | high | xhigh | max, got 'hihg'; did you mean 'high'?"),
    ("[upstream:d]\ntype = demo\n[model:m]\nupstream = d\nupstream_model = a b\n", "[model:m] upstream_model cannot contain spaces"),
    ("[key:alice]\nmodels = x\n", "proxy.ini line 1: [key:alice] needs key = ${SOME_VARIABLE}"),
    ("[key:alice]\nkey = k-0123456789abcdef\nrpm = 0\n", "line 3: [key:alice] rpm must be a number of requests per minute > 0, got '0'"),
    ("[key:alice]\nkey = k-0123456789abcdef\nmax_concurrent = 0\n", "line 3: [key:alice] max_concurrent must be a whole number >= 1"),
    ("[key:a]\nkey = k-0123456789abcdef\n[key:b]\nkey = k-0123456789abcdef\n", "proxy.ini line 4: [key:b] key: this key is the same as key 'a'"),
]
# fmt: on


@pytest.mark.parametrize(("text", "expected"), ERRORS)
def test_config_error_names_line_section_and_key(text: str, expected: str) -> None:
    message = error_of(text)
    assert expected in message, message


def test_a_stray_line_is_not_echoed_since_it_may_be_a_pasted_key() -> None:
    message = error_of(f"[upstream:a]\ntype = anthropic\n{SECRET}\n")
    assert message.startswith("proxy.ini line 3: cannot read this line")


def test_error_messages_use_the_given_source_name() -> None:
    with pytest.raises(ConfigError, match=r"^/etc/trioproxy.ini line 1: unknown section"):
        parse_config("[nope]\n", {}, source="/etc/trioproxy.ini")


def test_config_errors_carry_the_config_error_code() -> None:
    with pytest.raises(ConfigError) as info:
        parse("[nope]\n")
    assert info.value.code == "config_error"


def test_long_bad_values_are_shortened_in_messages() -> None:
    message = error_of("[proxy]\nlog_level = " + "x" * 500 + "\n")
    assert "x" * 60 not in message and "..." in message


# --- listen and loopback --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.com", False),
        ("localhost.example.com", False),
        ("128.0.0.1", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8003", ("127.0.0.1", 8003)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:65535", ("::1", 65535)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("proxy.internal.example:443", ("proxy.internal.example", 443)),
    ],
)
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]", "192.168.1.5", "example.com"])
def test_listening_beyond_loopback_without_keys_is_refused(host: str) -> None:
    message = error_of(f"[proxy]\nlog_level = info\nlisten = {host}:8003\n" + DEMO)
    shown = host.strip("[]")
    assert message == (
        f"proxy.ini line 3: [proxy] listen: refusing to listen on {shown} without api_keys: "
        "anyone who can reach it could spend your upstream keys; set api_keys in [proxy] or "
        "listen on 127.0.0.1"
    )


def test_the_refusal_says_which_variable_left_api_keys_empty() -> None:
    message = error_of("[proxy]\nlisten = 0.0.0.0:8003\napi_keys = ${PROXY_KEYS:-}\n" + DEMO)
    assert "without api_keys (PROXY_KEYS is not set)" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost", "127.0.0.2"])
def test_loopback_without_keys_is_fine(host: str) -> None:
    assert parse(f"[proxy]\nlisten = {host}:8003\n" + DEMO).proxy.keys == ()


@pytest.mark.parametrize(
    "keys",
    [
        "[proxy]\nlisten = 0.0.0.0:8003\napi_keys = k-0123456789abcdef\n",
        "[proxy]\nlisten = 0.0.0.0:8003\n[key:a]\nkey = k-0123456789abcdef\n",
        "[proxy]\nlisten = 0.0.0.0:8003\napi_keys_file = keys.txt\n",
    ],
)
def test_any_key_source_allows_listening_everywhere(keys: str) -> None:
    config = parse(keys + DEMO, files={"keys.txt": "k-0123456789abcdef\n"})
    assert config.proxy.listen_host == "0.0.0.0" and len(config.proxy.keys) == 1


# --- client keys ------------------------------------------------------------------------------------


def test_api_keys_are_named_by_position_or_by_name_prefix() -> None:
    config = parse(
        "[proxy]\napi_keys = k-first-0123456789, alice:k-alice-0123456789,\n"
        "    k-second-0123456789, bob:k:with:colons-0123\n" + DEMO
    )
    assert [(k.name, k.key) for k in config.proxy.keys] == [
        ("key-1", "k-first-0123456789"),
        ("alice", "k-alice-0123456789"),
        ("key-2", "k-second-0123456789"),
        ("bob", "k:with:colons-0123"),
    ]
    assert all(
        k.models == () and k.rpm is None and k.max_concurrent is None for k in config.proxy.keys
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            f"a:{SECRET}, a:{OTHER_SECRET}",
            "api_keys item 2: the key name 'a' is already used (proxy.ini line 2: [proxy] api_keys item 1)",
        ),
        (f"a:{SECRET}, b:{SECRET}", "api_keys item 2: this key is the same as key 'a'"),
        (f"{SECRET}, {SECRET}", "api_keys item 2: this key is the same as key 'key-1'"),
        (f"bad name:{SECRET}", "api_keys item 1 contains a space"),
        (f"bad!name:{SECRET}", "api_keys item 1: the name before ':' must be 1 to 64 letters"),
        ("alice:", "api_keys item 1: 'alice:' has no key after the ':'"),
        (f'"{SECRET}"', "api_keys item 1 is wrapped in quotes"),
    ],
)
def test_bad_api_keys_name_the_item_and_never_the_key(value: str, expected: str) -> None:
    message = error_of(f"[proxy]\napi_keys = {value}\n" + DEMO)
    assert message.startswith("proxy.ini line 2: [proxy] api_keys item ")
    assert expected in message


def test_api_keys_unset_variable_without_default_is_an_error_not_auth_off() -> None:
    assert "TRIOPROXY_API_KEYS is not set" in error_of(
        "[proxy]\napi_keys = ${TRIOPROXY_API_KEYS}\n"
    )


def test_api_keys_file_lines_are_key_or_name_and_key() -> None:
    files = {"keys.txt": f"# team keys\n\nalice {SECRET}\t# alice's laptop\n  {OTHER_SECRET} #\n"}
    config = parse(
        "[proxy]\napi_keys = k-inline-0123456789\napi_keys_file = keys.txt\n" + DEMO, files=files
    )
    assert [(k.name, k.key) for k in config.proxy.keys] == [
        ("key-1", "k-inline-0123456789"),
        ("alice", SECRET),
        ("key-2", OTHER_SECRET),
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f"alice {SECRET} extra\n", "keys.txt line 1: expected 'KEY' or 'NAME KEY'"),
        (f"al!ce {SECRET}\n", "keys.txt line 1: a key name is 1 to 64 letters"),
        (f"\n{SECRET}\n{SECRET}\n", "keys.txt line 3: this key is the same as key 'key-1'"),
    ],
)
def test_bad_api_keys_file_lines_are_named_by_file_and_line(content: str, expected: str) -> None:
    message = error_of("[proxy]\napi_keys_file = keys.txt\n" + DEMO, files={"keys.txt": content})
    assert message.startswith(expected)


def test_api_keys_file_that_was_not_provided_is_an_error() -> None:
    message = error_of("[proxy]\n\napi_keys_file = keys.txt\n" + DEMO)
    assert message.startswith("proxy.ini line 3: [proxy] api_keys_file cannot read 'keys.txt': ")


def test_key_sections_carry_their_limits() -> None:
    config = parse(
        "[key:alice]\nkey = ${ALICE}\nmodels = gpt-*, demo\nmax_concurrent = 4\nrpm = 0.5\n" + DEMO,
        {"ALICE": SECRET},
    )
    (key,) = config.proxy.keys
    assert (key.name, key.key, key.models, key.max_concurrent, key.rpm) == (
        "alice",
        SECRET,
        ("gpt-*", "demo"),
        4,
        0.5,
    )


def test_a_key_section_whose_key_is_unset_is_skipped_with_a_warning() -> None:
    config = parse(
        "[key:alice]\nkey = ${ALICE}\n[key:bob]\nkey = ${BOB:-}\n[key:carol]\nkey = ${CAROL}\n"
        + DEMO,
        {"CAROL": SECRET, "BOB": ""},
    )
    assert [k.name for k in config.proxy.keys] == ["carol"]
    assert "client key 'alice' is skipped: ALICE is not set" in config.warnings
    assert "client key 'bob' is skipped: BOB is empty" in config.warnings


def test_key_sections_that_all_resolve_empty_are_an_error_so_auth_never_silently_turns_off() -> (
    None
):
    message = error_of("\n[key:alice]\nkey = ${ALICE}\n[key:bob]\nkey =\n" + DEMO)
    assert message.startswith("proxy.ini line 3: every client key resolved empty")
    assert "[key:alice]: ALICE is not set; [key:bob]: key is empty" in message


def test_short_client_keys_get_a_warning() -> None:
    config = parse("[proxy]\napi_keys = sk-short\n" + DEMO)
    assert any("client key 'key-1' is shorter than 16 characters" in w for w in config.warnings)
    assert not any("sk-short" in w for w in config.warnings)


@pytest.mark.parametrize("bad", [f"'{SECRET}'", f"{SECRET} x", f"{SECRET}é"])
def test_bad_secrets_are_reported_without_showing_them(bad: str) -> None:
    message = error_of(f"[upstream:a]\ntype = anthropic\napi_key = {bad}\n")
    assert message.startswith("proxy.ini line 3: [upstream:a] api_key ")


def test_metrics_key_may_be_optional_through_a_default() -> None:
    assert parse("[proxy]\nmetrics_key = ${MK:-}\n" + DEMO).proxy.metrics_key is None
    assert (
        parse("[proxy]\nmetrics_key = ${MK}\n" + DEMO, {"MK": SECRET}).proxy.metrics_key == SECRET
    )


# --- upstreams ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "environ", "reason"),
    [
        ("api_key = ${ANTHROPIC_API_KEY:-}", {}, "ANTHROPIC_API_KEY is not set"),
        (
            "api_key = ${ANTHROPIC_API_KEY}",
            {},
            "ANTHROPIC_API_KEY is not set",
        ),  # no error for api_key
        ("api_key = ${ANTHROPIC_API_KEY}", {"ANTHROPIC_API_KEY": ""}, "ANTHROPIC_API_KEY is empty"),
        (
            "api_key = ${ANTHROPIC_API_KEY:-}",
            {"ANTHROPIC_API_KEY": "  "},
            "ANTHROPIC_API_KEY is blank",
        ),
        ("api_key =", {}, "api_key is empty"),
        ("", {}, "no api_key is set in [upstream:claude]"),
    ],
)
def test_an_upstream_without_a_key_is_disabled_with_a_reason_and_one_warning(
    line: str, environ: dict[str, str], reason: str
) -> None:
    config = parse(
        f"[upstream:claude]\ntype = anthropic\n{line}\n[model:claude-*]\nupstream = claude\n",
        environ,
    )
    upstream = config.upstreams["claude"]
    assert not upstream.enabled
    assert upstream.disabled_reason == reason
    assert upstream.api_key == ""
    assert config.warnings == (
        f"upstream 'claude' is disabled: {reason}; these models will answer 503: claude-*",
    )


def test_the_warning_lists_only_models_left_without_any_enabled_upstream() -> None:
    config = parse(
        "[upstream:a]\ntype = anthropic\n[upstream:d]\ntype = demo\n"
        "[model:x]\nupstream = a, d\n[model:y]\nupstream = a\n"
    )
    assert config.warnings == (
        "upstream 'a' is disabled: no api_key is set in [upstream:a]; these models will answer 503: y",
    )


def test_headers_one_per_line_or_comma_separated_on_one_line() -> None:
    config = parse(
        "[upstream:a]\ntype = demo\nheaders = HTTP-Referer: https://x.example/a,b, X-Title: y\n"
        "    X-Extra:   spaced value, with comma\n[model:m]\nupstream = a\n"
    )
    assert config.upstreams["a"].extra_headers == (
        ("http-referer", "https://x.example/a,b"),
        ("x-title", "y"),
        ("x-extra", "spaced value, with comma"),
    )


def test_anthropic_base_url_with_v1_and_plain_http_get_warnings() -> None:
    config = parse(
        "[upstream:a]\ntype = anthropic\nbase_url = http://gw.example.com/v1/\napi_key = k\n"
        "[upstream:local]\ntype = openai-chat\nbase_url = http://127.0.0.1:11434/v1\napi_key = k\n"
        "[model:m]\nupstream = a, local\n"
    )
    assert config.upstreams["a"].base_url == "http://gw.example.com/v1"
    assert config.warnings == (
        "upstream 'a': base_url ends in /v1, but trioproxy appends /v1/messages (as the "
        "Anthropic SDK does); write it without /v1",
        "upstream 'a': base_url is plain http to gw.example.com, so its api_key crosses the "
        "network unencrypted",
    )


def test_an_unused_upstream_gets_a_warning() -> None:
    config = parse("[upstream:spare]\ntype = demo\n" + DEMO)
    assert config.warnings == ("upstream 'spare' is not used by any [model:NAME] section",)


# --- secrets never shown ---------------------------------------------------------------------------


def _secret_config() -> ProxyConfig:
    return parse(
        f"""
[proxy]
listen = 0.0.0.0:8003
api_keys = alice:{SECRET}
metrics_key = metrics-{SECRET}
[key:bob]
key = ${{BOB_KEY}}
models = demo
rpm = 60
[upstream:claude]
type = anthropic
api_key = ${{ANTHROPIC_API_KEY}}
https_proxy = http://user:{SECRET}@proxy.example:3128
headers = cf-aig-authorization: Bearer gw-{SECRET}
[upstream:off]
type = openai-responses
api_key = ${{OPENAI_API_KEY:-}}
"""
        + DEMO
        + "[model:claude]\nupstream = claude\n[model:gpt]\nupstream = off\n",
        {"ANTHROPIC_API_KEY": f"ant-{OTHER_SECRET}", "BOB_KEY": f"bob-{OTHER_SECRET}"},
    )


def test_repr_of_the_config_holds_no_secret() -> None:
    config = _secret_config()
    text = repr(config)
    assert SECRET not in text and OTHER_SECRET not in text
    assert config.upstreams["claude"].api_key == f"ant-{OTHER_SECRET}"  # it is there, just hidden


def test_describe_summarises_without_secrets() -> None:
    config = _secret_config()
    text = describe(config)
    assert SECRET not in text and OTHER_SECRET not in text
    assert text.splitlines()[0] == "listen: http://0.0.0.0:8003"
    assert "auth: on, 2 client keys: alice, bob (models demo; 60/min)" in text
    assert "metrics: GET /metrics, metrics_key required" in text
    assert re.search(
        r"claude +anthropic +https://api.anthropic.com +enabled \(headers cf-aig-authorization; via an https_proxy\)",
        text,
    )
    assert re.search(
        r"off +openai-responses +https://api.openai.com/v1 +disabled: OPENAI_API_KEY is not set",
        text,
    )
    assert re.search(r"demo +demo +\(built in\) +enabled", text)
    assert re.search(r"gpt +-> off \(disabled\)", text)


def test_describe_without_keys_says_auth_is_off_and_brackets_ipv6() -> None:
    text = describe(parse("[proxy]\nlisten = [::1]:0\nmetrics = false\n" + DEMO))
    assert text.splitlines()[:3] == [
        "listen: http://[::1]:0",
        "auth: off (no client keys: anyone who can reach the address may use it; loopback only)",
        "metrics: off",
    ]


def test_describe_of_an_empty_config() -> None:
    assert describe(parse("")).splitlines()[-2:] == ["upstreams: none", "models: none"]


# --- mapping sources and load_config ----------------------------------------------------------------


def test_a_mapping_parses_like_the_equivalent_text() -> None:
    text = parse(
        "[proxy]\nlisten = 127.0.0.1:0\nmetrics = false\nmax_tools = 3\n"
        "[upstream:demo]\ntype = demo\ndemo_delay = 0\nheaders =\n  X-A: 1\n  X-B: 2\n"
        "[model:demo]\nupstream = demo\n"
    )
    mapping = parse_config_mapping(
        {
            "proxy": {"listen": "127.0.0.1:0", "metrics": False, "MAX_TOOLS": 3},
            "upstream:demo": {"type": "demo", "demo_delay": 0, "headers": ["X-A: 1", "X-B: 2"]},
            "model:demo": {"upstream": "demo"},
        },
        {},
    )
    assert mapping == text


def test_mapping_errors_name_section_and_key_without_a_line() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^<config mapping>: unknown key 'listn' in \[proxy\]; did you mean 'listen'\?$",
    ):
        parse_config_mapping({"proxy": {"listn": "x"}}, {})
    with pytest.raises(
        ConfigError, match=r"^<config mapping>: \[proxy\] keepalive_interval must be"
    ):
        parse_config_mapping({"proxy": {"keepalive_interval": -1}}, {})
    with pytest.raises(
        ConfigError, match=r"\[proxy\] listen must be a string, number, bool or list"
    ):
        parse_config_mapping({"proxy": {"listen": {"host": "x"}}}, {})
    with pytest.raises(ConfigError, match=r"\[proxy\] must be a mapping"):
        parse_config_mapping({"proxy": "listen = x"}, {})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match=r"key 'listen' appears twice in \[proxy\]"):
        parse_config_mapping({"proxy": {"listen": "a:1", "LISTEN": "b:2"}}, {})


def test_mapping_values_are_interpolated_too() -> None:
    config = load_config(
        {"upstream:a": {"type": "anthropic", "api_key": "${K}"}, "model:m": {"upstream": "a"}},
        environ={},
    )
    assert config.upstreams["a"].disabled_reason == "K is not set"


def test_load_config_reads_the_file_and_its_key_file_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "keys.txt").write_text(f"alice {SECRET}\n")
    ini = tmp_path / "proxy.ini"
    ini.write_text("[proxy]\nlisten = 0.0.0.0:1\napi_keys_file = keys.txt\n" + DEMO)
    config = load_config(ini, environ={})
    assert [(k.name, k.key) for k in config.proxy.keys] == [("alice", SECRET)]
    ini.write_text("[nope]\n")
    with pytest.raises(ConfigError, match=re.escape(f"{ini} line 1: unknown section")):
        load_config(str(ini), environ={})


def test_load_config_names_a_key_file_it_cannot_read(tmp_path: Path) -> None:
    ini = tmp_path / "proxy.ini"
    ini.write_text("[proxy]\napi_keys_file = missing.txt\n" + DEMO)
    with pytest.raises(ConfigError) as info:
        load_config(ini, environ={})
    assert info.value.message == (
        f"{ini} line 2: [proxy] api_keys_file cannot read 'missing.txt': No such file or directory"
    )


def test_load_config_accepts_ini_text_and_uses_os_environ_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRIOPROXY_TEST_PORT", "8123")
    config = load_config("[proxy]\nlisten = 127.0.0.1:${TRIOPROXY_TEST_PORT}\n" + DEMO)
    assert config.proxy.listen_port == 8123


def test_load_config_reports_a_missing_file_as_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "nope.ini", environ={})


def test_load_config_reports_a_non_utf8_file(tmp_path: Path) -> None:
    ini = tmp_path / "proxy.ini"
    ini.write_bytes(b"[proxy]\nlisten = \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(ini, environ={})


# --- the shipped proxy.ini ------------------------------------------------------------------------------


def test_shipped_proxy_ini_serves_demo_on_loopback_with_an_empty_environment() -> None:
    config = load_config(SHIPPED, environ={})
    assert (config.proxy.listen_host, config.proxy.listen_port) == ("127.0.0.1", 8003)
    assert config.proxy.keys == ()
    assert config.upstreams["demo"].enabled
    assert {name: u.disabled_reason for name, u in config.upstreams.items() if not u.enabled} == {
        "anthropic": "ANTHROPIC_API_KEY is not set",
        "openai": "OPENAI_API_KEY is not set",
        "openrouter": "OPENROUTER_API_KEY is not set",
    }
    assert len(config.warnings) == 3
    route = Router(config).route("demo")
    assert [c.upstream.name for c in route.candidates] == ["demo"]


def test_shipped_proxy_ini_with_keys_set_enables_everything() -> None:
    environ = {
        "ANTHROPIC_API_KEY": "sk-ant-x",
        "OPENAI_API_KEY": "sk-openai-x",
        "OPENROUTER_API_KEY": "sk-or-x",
        "TRIOPROXY_API_KEYS": f"alice:{SECRET}, {OTHER_SECRET}",
    }
    config = load_config(SHIPPED, environ=environ)
    assert all(u.enabled for u in config.upstreams.values())
    assert config.warnings == ()
    assert [k.name for k in config.proxy.keys] == ["alice", "key-1"]
    router = Router(config)
    assert router.route("claude-sonnet-4-5").candidates[0].target.upstream_model == (
        "claude-sonnet-4-5-20250929"
    )
    assert router.route("claude-opus-4-1").candidates[0].upstream.name == "anthropic"
    assert router.route("gpt-5").candidates[0].upstream.name == "openai"
    assert router.route("gpt-5").candidates[0].target.defaults.reasoning_effort == "medium"
    openrouter = router.route("meta-llama/llama-3.3-70b-instruct").candidates[0]
    assert (openrouter.upstream.name, openrouter.target.upstream_model) == (
        "openrouter",
        "meta-llama/llama-3.3-70b-instruct",
    )
    assert SECRET not in describe(config) and OTHER_SECRET not in describe(config)


def test_defaults_quoted_in_the_shipped_proxy_ini_are_the_real_defaults() -> None:
    limits = {
        "ws_max_in_flight",
        "ws_max_message_bytes",
        "max_messages",
        "max_tools",
        "max_json_depth",
    }
    quoted = re.findall(r"^; (\w+) = (\S+) ", SHIPPED.read_text(), flags=re.MULTILINE)
    defaults = dataclasses.asdict(ProxySettings())
    checked = {key: value for key, value in quoted if key in limits}
    assert set(checked) == limits
    for key, value in checked.items():
        assert str(defaults[key]) == value, key


def test_the_shipped_commented_examples_parse_when_uncommented() -> None:
    text = SHIPPED.read_text()
    for example in (
        "; metrics_key =",
        "; anthropic_version =",
        "; anthropic_beta =",
        "; demo_delay =",
        "; cors_origins =",
    ):
        text = text.replace(example, example[2:])
    text = re.sub(r"^; (headers =|    HTTP-Referer|    X-Title)", r"\1", text, flags=re.MULTILINE)
    text = re.sub(
        r"^; (\[key:alice\]|key =|models =|max_concurrent =|rpm =|tpm =)", r"\1", text, flags=re.MULTILINE
    )
    config = parse_config(text, {"TRIOPROXY_METRICS_KEY": SECRET, "ALICE_PROXY_KEY": OTHER_SECRET})
    assert config.proxy.metrics_key == SECRET
    assert [k.name for k in config.proxy.keys] == ["alice"]
    assert config.upstreams["openrouter"].extra_headers == (
        ("http-referer", "https://example.com"),
        ("x-title", "my-app"),
    )


# --- the fuzz invariant -------------------------------------------------------------------------------


# fmt: off
FRAGMENTS = [
    "[proxy]", "[upstream:a]", "[upstream:d]", "[model:m]", "[model:*]", "[key:k]", "[x]",
    "[upstream:", "listen = 127.0.0.1:0", "listen = 0.0.0.0:1", "listen = [::1]:1",
    "api_keys = a:b, c", "api_keys_file = f", "type = demo", "type = anthropic",
    "type = openai-chat", "upstream = a, d", "upstream = d", "base_url = https://x.example/v1",
    "api_key = ${K:-}", "api_key = ${K}", "key = ${K}", "key = k-0123456789abcdef",
    "headers = X-A: 1, B: 2", "  continued: x", "max_tokens = 5", "reasoning_effort = high",
    "rpm = 1", "keepalive_interval = 0.5", "models = *", "; comment", "", "${", "$$", "=", "[", "]",
    "\r", "\x00", "é",
]
# fmt: on


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=20)), max_size=15),
    st.dictionaries(st.sampled_from(["K", "A", "PORT"]), st.text(max_size=8), max_size=3),
)
def test_any_text_gives_a_config_or_a_config_error(
    pieces: list[str], environ: dict[str, str]
) -> None:
    text = "\n".join(pieces)
    try:
        config = parse_config(text, environ, files={"f": "\n".join(pieces[:3])})
    except ConfigError as exc:
        error = exc
    else:
        describe(config)  # and describing it never fails either
        return
    assert error.message


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_unicode_text_gives_a_config_or_a_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(text, {})
