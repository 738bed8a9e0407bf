from __future__ import annotations

import re
from typing import Any

import pytest

from controller.strongswan.conf import DEFAULT_PLUGINS, render_strongswan_conf, vici_uri


def parse(text: str) -> dict[str, Any]:
    """A strict reader of the strongswan.conf subset we emit (sections, key = value)."""
    root: dict[str, Any] = {}
    stack = [root]
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("{"):
            name = line[:-1].strip()
            assert re.fullmatch(r"[A-Za-z0-9_-]+", name), line
            child: dict[str, Any] = {}
            stack[-1][name] = child
            stack.append(child)
        elif line == "}":
            stack.pop()
        else:
            key, _, value = line.partition(" = ")
            assert re.fullmatch(r"[A-Za-z0-9_-]+", key), line
            stack[-1][key] = value
    assert len(stack) == 1, "unbalanced braces"
    return root


def charon(**kwargs: Any) -> dict[str, Any]:
    conf = parse(render_strongswan_conf(vici_socket="/run/strongmesh/charon.vici", **kwargs))
    assert list(conf) == ["charon", "swanctl"]
    return conf["charon"]  # type: ignore[no-any-return]


def test_swanctl_loads_only_what_it_uses_so_probes_print_no_plugin_warnings() -> None:
    conf = parse(render_strongswan_conf(vici_socket="/run/strongmesh/charon.vici"))
    assert conf["swanctl"] == {"load": "pem pkcs1 pkcs8 x509 revocation constraints pubkey "
                                       "openssl random"}


def test_plugins_are_chosen_per_plugin_so_charon_prints_no_expert_warning() -> None:
    settings = charon()
    assert settings["load_modular"] == "yes"
    assert "load" not in settings  # an explicit charon.load list is what triggers the warning
    assert list(settings["plugins"]) == list(DEFAULT_PLUGINS)
    assert all(p["load"] == "yes" for p in settings["plugins"].values())


def test_restricted_plugin_set_has_what_x509_ike_needs_and_no_more() -> None:
    assert "kdf" in DEFAULT_PLUGINS  # LAB-NOTES: IKE fails without it
    assert {"openssl", "x509", "pem", "nonce", "kernel-netlink", "vici"} <= set(DEFAULT_PLUGINS)
    assert not {"stroke", "updown", "eap-radius", "kernel-libipsec"} & set(DEFAULT_PLUGINS)


def test_nothing_is_included_from_etc() -> None:
    text = render_strongswan_conf(vici_socket="/x.vici")
    settings = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in settings if "include" in line]


@pytest.mark.parametrize(
    ("socket", "uri"),
    [("/run/x/charon.vici", "unix:///run/x/charon.vici"), ("unix:///a.vici", "unix:///a.vici")],
)
def test_vici_socket_accepts_a_path_or_a_uri(socket: str, uri: str) -> None:
    assert vici_uri(socket) == uri
    conf = parse(render_strongswan_conf(vici_socket=socket))
    assert conf["charon"]["plugins"]["vici"]["socket"] == uri


def test_kernel_side_options_leave_routes_and_selectors_to_strongmesh() -> None:
    settings = charon()
    assert settings["install_routes"] == "no"
    assert settings["install_virtual_ip"] == "no"
    assert settings["ignore_acquire_ts"] == "yes"
    assert float(settings["retransmit_timeout"]) <= 4.0
    assert int(settings["retransmit_tries"]) <= 5


@pytest.mark.parametrize("level", [-1, 0, 1, 4])
def test_log_level_goes_to_stderr(level: int) -> None:
    logs = charon(log_level=level)["filelog"]
    assert logs == {
        "stderr": {"path": "stderr", "default": str(level), "ike_name": "yes", "flush_line": "yes"}
    }


def test_log_file_is_an_additional_target() -> None:
    logs = charon(log_file="/var/log/charon.log")["filelog"]
    assert logs["file"]["path"] == "/var/log/charon.log"
    assert "stderr" in logs


@pytest.mark.parametrize("level", [-2, 5])
def test_log_level_outside_charons_range_is_refused(level: int) -> None:
    with pytest.raises(ValueError, match="log level"):
        render_strongswan_conf(vici_socket="/x.vici", log_level=level)


def test_xfrm_acq_expires_is_set_where_charon_would_otherwise_overwrite_it() -> None:
    assert "xfrm_acq_expires" not in charon()["plugins"]["kernel-netlink"]
    netlink = charon(xfrm_acq_expires=6)["plugins"]["kernel-netlink"]
    assert netlink == {"load": "yes", "xfrm_acq_expires": "6"}


def test_extra_dotted_keys_become_nested_sections() -> None:
    settings = charon(extra={"plugins.vici.socket_mode": "0660", "make_before_break": "yes"})
    assert settings["plugins"]["vici"]["socket_mode"] == "0660"
    assert settings["plugins"]["vici"]["load"] == "yes"
    assert settings["make_before_break"] == "yes"


@pytest.mark.parametrize(
    "extra",
    [
        {"a b": "x"},
        {"ok": "value } evil {"},
        {"ok": "two\nlines"},
        {"install_routes.deeper": "x"},
    ],
)
def test_unsafe_extra_settings_are_refused(extra: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"not a|nests below"):
        render_strongswan_conf(vici_socket="/x.vici", extra=extra)


def test_plugin_list_can_be_replaced() -> None:
    settings = charon(plugins=("random", "nonce", "openssl", "vici"))
    assert list(settings["plugins"]) == ["random", "nonce", "openssl", "vici"]
