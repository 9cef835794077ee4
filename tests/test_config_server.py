"""The `[proxy]` keys of the server layer: server, certfile, keyfile, head_timeout, body_timeout,
keep_alive_timeout, max_header_bytes. Defaults, accepted values, rejected values with the line in
the message, TLS rules, path resolution, `load_config`'s check that the TLS files can be read, and
what `describe()` says about them."""

# The catalogue keeps one case per line (# fmt: off), so some lines run past 100 columns.
# ruff: noqa: E501
from __future__ import annotations

import re
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

import pytest

from trioproxy.config import describe, load_config, parse_config, parse_config_mapping
from trioproxy.config_types import SERVERS, ProxySettings
from trioproxy.errors import ConfigError

if TYPE_CHECKING:
    from trioproxy.config_types import ProxyConfig

SHIPPED = Path(__file__).parent.parent / "proxy.ini"
DEMO = "[upstream:demo]\ntype = demo\n\n[model:demo]\nupstream = demo\n"
KEY = "sk-proxy-0123456789abcdefghij"
NEW_KEYS = (
    "server",
    "certfile",
    "keyfile",
    "head_timeout",
    "body_timeout",
    "keep_alive_timeout",
    "max_header_bytes",
)


def parse(proxy_lines: str, environ: dict[str, str] | None = None, **kw: object) -> ProxyConfig:
    return parse_config("[proxy]\n" + proxy_lines + DEMO, environ or {}, **kw)  # type: ignore[arg-type]


def error_of(proxy_lines: str, environ: dict[str, str] | None = None, **kw: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse(proxy_lines, environ, **kw)
    return info.value.message


# --- defaults -------------------------------------------------------------------------------------


def test_the_defaults_are_the_native_server_without_tls_and_the_documented_limits() -> None:
    proxy = parse("").proxy
    assert proxy == ProxySettings()
    assert proxy.server == "native"
    assert (proxy.certfile, proxy.keyfile, proxy.tls) == (None, None, False)
    assert proxy.head_timeout == 10
    assert proxy.body_timeout == 30
    assert proxy.keep_alive_timeout == 75
    assert proxy.max_header_bytes == 32768
    assert SERVERS == ("native", "hypercorn")


def test_empty_values_mean_the_default() -> None:
    proxy = parse("certfile =\nkeyfile =\n").proxy
    assert (proxy.certfile, proxy.keyfile, proxy.tls) == (None, None, False)


# --- accepted values ------------------------------------------------------------------------------


def test_every_server_key_is_read_into_proxy_settings() -> None:
    proxy = parse(
        "server = HyperCorn\n"
        "certfile = tls/cert.pem\n"
        "keyfile = /etc/trioproxy/key.pem\n"
        "head_timeout = 2.5\n"
        "body_timeout = 1e1\n"
        "keep_alive_timeout = .5\n"
        "max_header_bytes = 1024\n",
        base_dir="/srv/trioproxy",
    ).proxy
    assert proxy.server == "hypercorn"
    assert proxy.certfile == str(PurePath("/srv/trioproxy/tls/cert.pem"))
    assert proxy.keyfile == "/etc/trioproxy/key.pem"  # absolute: base_dir does not apply
    assert proxy.tls
    assert proxy.head_timeout == 2.5
    assert proxy.body_timeout == 10.0
    assert proxy.keep_alive_timeout == 0.5
    assert proxy.max_header_bytes == 1024


def test_hypercorn_without_tls_is_allowed() -> None:
    proxy = parse("server = hypercorn\n").proxy
    assert (proxy.server, proxy.tls) == ("hypercorn", False)


def test_http2_is_off_by_default_and_only_for_hypercorn() -> None:
    assert parse("server = hypercorn\n").proxy.http2 is False
    assert parse("server = hypercorn\nhttp2 = true\n").proxy.http2 is True
    message = error_of("http2 = true\n")
    assert "line 2" in message
    assert "HTTP/2 needs server = hypercorn" in message


def test_without_base_dir_tls_paths_stay_as_written() -> None:
    proxy = parse("server = hypercorn\ncertfile = cert.pem\nkeyfile = ./key.pem\n").proxy
    assert (proxy.certfile, proxy.keyfile) == ("cert.pem", "./key.pem")


def test_a_tls_path_may_start_with_home_from_the_environ_given() -> None:
    proxy = parse(
        "server = hypercorn\ncertfile = ~/tls/cert.pem\nkeyfile = ${TLS_DIR}/key.pem\n",
        {"HOME": "/home/ada", "TLS_DIR": "/run/secrets"},
        base_dir="/srv",
    ).proxy
    assert proxy.certfile == str(PurePath("/home/ada/tls/cert.pem"))
    assert proxy.keyfile == str(PurePath("/run/secrets/key.pem"))


def test_a_mapping_takes_the_server_keys_as_python_values() -> None:
    config = parse_config_mapping(
        {
            "proxy": {
                "server": "hypercorn",
                "certfile": "/c.pem",
                "keyfile": "/k.pem",
                "head_timeout": 1,
                "body_timeout": 0.25,
                "keep_alive_timeout": 5,
                "max_header_bytes": 4096,
            },
            "upstream:demo": {"type": "demo"},
        },
        {},
    )
    proxy = config.proxy
    assert (proxy.server, proxy.certfile, proxy.keyfile) == ("hypercorn", "/c.pem", "/k.pem")
    assert (proxy.head_timeout, proxy.body_timeout, proxy.keep_alive_timeout) == (1, 0.25, 5)
    assert proxy.max_header_bytes == 4096


# --- rejected values, each naming the line --------------------------------------------------------


# fmt: off
ERRORS = [
    ("server = apache\n", "proxy.ini line 2: [proxy] server must be one of native | hypercorn, got 'apache'"),
    ("server = hypercon\n", "line 2: [proxy] server must be one of native | hypercorn, got 'hypercon'; did you mean 'hypercorn'?"),
    ("server =\n", "line 2: [proxy] server must be one of native | hypercorn, got ''"),
    ("head_timeout = 0\n", "proxy.ini line 2: [proxy] head_timeout must be a number of seconds > 0, got '0'"),
    ("head_timeout = -1\n", "line 2: [proxy] head_timeout must be a number of seconds > 0, got '-1'"),
    ("head_timeout = 10s\n", "line 2: [proxy] head_timeout must be a number of seconds > 0, got '10s'"),
    ("body_timeout = 0\n", "proxy.ini line 2: [proxy] body_timeout must be a number of seconds > 0, got '0'"),
    ("body_timeout = inf\n", "line 2: [proxy] body_timeout must be a number of seconds > 0, got 'inf'"),
    ("keep_alive_timeout = 0\n", "proxy.ini line 2: [proxy] keep_alive_timeout must be a number of seconds > 0, got '0'"),
    ("keep_alive_timeout = nan\n", "line 2: [proxy] keep_alive_timeout must be a number of seconds > 0, got 'nan'"),
    ("max_header_bytes = 1023\n", "proxy.ini line 2: [proxy] max_header_bytes must be a whole number >= 1024, got '1023'"),
    ("max_header_bytes = 32KiB\n", "line 2: [proxy] max_header_bytes must be a whole number >= 1024, got '32KiB'"),
    ("max_header_bytes = 0\n", "line 2: [proxy] max_header_bytes must be a whole number >= 1024, got '0'"),
    ("keep_alive = 5\n", "proxy.ini line 2: unknown key 'keep_alive' in [proxy]; did you mean"),
    ("header_timeout = 5\n", "proxy.ini line 2: unknown key 'header_timeout' in [proxy]; did you mean 'head_timeout'?"),
    ("certfile = c.pem\nkeyfile = k.pem\n", "proxy.ini line 2: [proxy] certfile is set, but TLS needs server = hypercorn"),
    ("server = native\n\nkeyfile = k.pem\n", "proxy.ini line 4: [proxy] keyfile is set, but TLS needs server = hypercorn"),
    ("server = hypercorn\ncertfile = c.pem\n", "proxy.ini line 3: [proxy] certfile is set without keyfile: TLS needs both"),
    ("server = hypercorn\n; comment\nkeyfile = k.pem\n", "proxy.ini line 4: [proxy] keyfile is set without certfile: TLS needs both"),
    ("server = hypercorn\ncertfile = ~bob/c.pem\nkeyfile = k.pem\n", "line 3: [proxy] certfile cannot use ~user, got '~bob/c.pem'; write the full path"),
    ("server = hypercorn\ncertfile = ~/c.pem\nkeyfile = k.pem\n", "line 3: [proxy] certfile starts with ~, but HOME is not set; write the full path"),
    ("server = hypercorn\ncertfile = c.pem\nkeyfile = ${KEYFILE}\n", "line 4: [proxy] keyfile uses ${KEYFILE}, but KEYFILE is not set"),
]
# fmt: on


@pytest.mark.parametrize(("lines", "expected"), ERRORS)
def test_a_bad_server_setting_names_line_section_and_key(lines: str, expected: str) -> None:
    message = error_of(lines)
    assert expected in message, message


def test_a_control_character_in_a_tls_path_is_an_error() -> None:
    message = error_of(
        "server = hypercorn\ncertfile = ${CERT}\nkeyfile = k.pem\n", {"CERT": "a\tb"}
    )
    assert message == "proxy.ini line 3: [proxy] certfile cannot contain control characters"


def test_tls_does_not_lift_the_refusal_to_listen_beyond_loopback_without_keys() -> None:
    message = error_of("listen = 0.0.0.0:8443\nserver = hypercorn\ncertfile = c\nkeyfile = k\n")
    assert message.startswith("proxy.ini line 2: [proxy] listen: refusing to listen on 0.0.0.0")


def test_tls_beyond_loopback_with_keys_is_fine() -> None:
    proxy = parse(
        f"listen = 0.0.0.0:8443\napi_keys = {KEY}\nserver = hypercorn\ncertfile = c\nkeyfile = k\n"
    ).proxy
    assert (proxy.listen_host, proxy.tls) == ("0.0.0.0", True)


# --- load_config: paths relative to the ini file, and readable -------------------------------------


def test_load_config_resolves_tls_paths_against_the_config_files_directory(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "cert.pem").write_text("not checked here\n")
    (tmp_path / "tls" / "key.pem").write_text("not checked here\n")
    ini = tmp_path / "proxy.ini"
    ini.write_text("[proxy]\nserver = hypercorn\ncertfile = tls/cert.pem\nkeyfile = tls/key.pem\n")
    proxy = load_config(ini, environ={}).proxy
    assert proxy.certfile == str(tmp_path / "tls" / "cert.pem")
    assert proxy.keyfile == str(tmp_path / "tls" / "key.pem")


def test_load_config_names_a_tls_file_it_cannot_read_and_its_line(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("x\n")
    ini = tmp_path / "proxy.ini"
    ini.write_text("[proxy]\nserver = hypercorn\ncertfile = cert.pem\n\nkeyfile = missing.pem\n")
    with pytest.raises(ConfigError) as info:
        load_config(ini, environ={})
    assert info.value.message == (
        f"{ini} line 5: [proxy] keyfile cannot read {str(tmp_path / 'missing.pem')!r}: "
        "No such file or directory"
    )


def test_load_config_of_a_mapping_resolves_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.pem").write_text("x\n")
    sections = {"proxy": {"server": "hypercorn", "certfile": "c.pem", "keyfile": "k.pem"}}
    with pytest.raises(ConfigError) as info:
        load_config(sections, environ={})
    assert info.value.message == (
        f"<config mapping>: [proxy] keyfile cannot read {str(tmp_path / 'k.pem')!r}: "
        "No such file or directory"
    )
    (tmp_path / "k.pem").write_text("x\n")
    assert load_config(sections, environ={}).proxy.keyfile == str(tmp_path / "k.pem")


# --- describe -------------------------------------------------------------------------------------


def test_describe_shows_the_native_server_and_its_limits() -> None:
    lines = describe(parse("head_timeout = 2.5\nmax_header_bytes = 4096\n")).splitlines()
    assert lines[0] == "listen: http://127.0.0.1:8003"
    assert (
        "server: native; timeouts head 2.5 s, body 30 s, keep-alive 75 s; max_header_bytes 4096"
        in lines
    )


def test_describe_shows_tls_with_https_and_the_file_paths() -> None:
    text = describe(
        parse(
            "listen = [::1]:8443\nserver = hypercorn\ncertfile = c.pem\nkeyfile = k.pem\n",
            base_dir="/etc/trioproxy",
        )
    )
    assert text.splitlines()[0] == "listen: https://[::1]:8443"
    certfile, keyfile = PurePath("/etc/trioproxy/c.pem"), PurePath("/etc/trioproxy/k.pem")
    assert f"server: hypercorn, TLS (certfile {certfile}, keyfile {keyfile}); timeouts" in text
    assert "server: hypercorn, no TLS;" in describe(parse("server = hypercorn\n"))


# --- the shipped proxy.ini --------------------------------------------------------------------------


def test_the_shipped_proxy_ini_documents_each_server_key_with_its_real_default() -> None:
    quoted = dict(re.findall(r"^; (\w+) = (\S+)", SHIPPED.read_text(), flags=re.MULTILINE))
    defaults = ProxySettings()
    assert quoted["server"] == defaults.server
    for key in ("head_timeout", "body_timeout", "keep_alive_timeout", "max_header_bytes"):
        assert float(quoted[key]) == getattr(defaults, key), key
    assert {"certfile", "keyfile"} <= set(quoted)


def test_the_shipped_server_examples_parse_when_uncommented(tmp_path: Path) -> None:
    text = SHIPPED.read_text()
    for key in NEW_KEYS:
        text = re.sub(rf"^; ({key} =)", r"\1", text, flags=re.MULTILINE)
    text = text.replace("server = native ", "server = hypercorn ", 1)
    config = parse_config(text, {}, base_dir="/etc/trioproxy")
    assert config.proxy.server == "hypercorn"
    assert config.proxy.tls
