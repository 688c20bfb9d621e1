"""Render the Janus and coturn configs kept in ``appliance/`` and start them as plain processes.

Production installs render the same templates with Ansible; the dev runner and the tests use
these functions. Rendered files hold secrets, so they are written owner-only.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

APPLIANCE_DIR = Path(__file__).resolve().parents[3] / "appliance"
JANUS_TEMPLATES = (
    "janus.jcfg",
    "janus.transport.websockets.jcfg",
    "janus.plugin.videoroom.jcfg",
)


def janus_lib_dir() -> str:
    """Where Debian's janus package keeps its plugins (multiarch path)."""
    found = sorted(Path("/usr/lib").glob("*/janus/plugins/libjanus_videoroom.so"))
    if not found:
        raise FileNotFoundError("janus videoroom plugin not found: apt-get install janus")
    return str(Path(found[0]).parent.parent)


def _render(template: Path, values: dict[str, Any]) -> str:
    # Config files, not HTML: nothing to escape, and every value must be given.
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701
    )
    return env.from_string(template.read_text()).render(**values)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


@dataclass
class JanusConfig:
    api_secret: str
    admin_secret: str
    admin_key: str
    ws_ip: str = "127.0.0.1"
    ws_port: int = 8188
    admin_ws_port: int = 7188
    rtp_port_range: str = "20000-40000"
    nat_1_1_mapping: str = ""
    ice_enforce_list: str = ""
    debug_level: int = 4
    log_file: str = ""
    log_to_stdout: bool = True


def render_janus(config: JanusConfig, config_dir: Path) -> Path:
    """Write janus.jcfg and its plugin/transport files into config_dir; return janus.jcfg."""
    config_dir.mkdir(parents=True, exist_ok=True)
    config_dir.chmod(0o700)
    values = {**config.__dict__, "config_dir": str(config_dir), "lib_dir": janus_lib_dir()}
    for name in JANUS_TEMPLATES:
        text = _render(APPLIANCE_DIR / "janus" / f"{name}.j2", values)
        _write_private(config_dir / name, text)
    return config_dir / "janus.jcfg"


def janus_command(config_dir: Path) -> list[str]:
    janus = shutil.which("janus") or "/usr/bin/janus"
    return [janus, "--configs-folder", str(config_dir), "--config", str(config_dir / "janus.jcfg")]


@dataclass
class CoturnConfig:
    secret: str
    listening_ip: str = "127.0.0.1"
    listening_port: int = 3478
    relay_ip: str = "127.0.0.1"
    external_ip: str = ""
    min_port: int = 49152
    max_port: int = 65535
    realm: str = "tipstream"
    log_file: str = ""
    pid_file: str = "/run/turnserver.pid"
    # Test and dev only: peers that may be relayed to despite the denied private ranges.
    allowed_peer_ips: list[str] = field(default_factory=list)
    allow_loopback_peers: bool = False


def render_coturn(config: CoturnConfig, path: Path) -> Path:
    _write_private(path, _render(APPLIANCE_DIR / "coturn" / "turnserver.conf.j2", config.__dict__))
    return path


def coturn_command(conf: Path) -> list[str]:
    turnserver = shutil.which("turnserver") or "/usr/bin/turnserver"
    return [turnserver, "-c", str(conf), "--no-software-attribute"]


def _read_secret(secrets_dir: Path, name: str) -> str:
    return (secrets_dir / name).read_text().strip()


def main(argv: list[str] | None = None) -> None:
    """Render the configs from the command line (the dev runner, appliance/janus/media.sh):

    python -m tipstream.rooms.mediaservers janus OUT_DIR --secrets DIR
    python -m tipstream.rooms.mediaservers coturn OUT_FILE --secrets DIR --ip IP [--port N]
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tipstream.rooms.mediaservers")
    parser.add_argument("what", choices=["janus", "coturn"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--secrets", type=Path, required=True)
    parser.add_argument("--ip", default="127.0.0.1", help="coturn listening/relay address")
    parser.add_argument("--port", type=int, default=3478)
    parser.add_argument("--pid-file", default="/run/turnserver.pid")
    parser.add_argument("--log-file", default="")
    args = parser.parse_args(argv)
    if args.what == "janus":
        config = JanusConfig(
            api_secret=_read_secret(args.secrets, "janus_api_secret"),
            admin_secret=_read_secret(args.secrets, "janus_admin_secret"),
            admin_key=_read_secret(args.secrets, "janus_admin_key"),
            log_file=args.log_file,
            log_to_stdout=not args.log_file,
        )
        print(render_janus(config, args.out))
    else:
        coturn = CoturnConfig(
            secret=_read_secret(args.secrets, "turn_secret"),
            listening_ip=args.ip,
            listening_port=args.port,
            relay_ip=args.ip,
            pid_file=args.pid_file,
            log_file=args.log_file,
            # The SFU runs on this same box: relaying to its own address is what TURN is for.
            allowed_peer_ips=[args.ip] if args.ip != "127.0.0.1" else [],
            allow_loopback_peers=args.ip == "127.0.0.1",
        )
        print(render_coturn(coturn, args.out))


if __name__ == "__main__":
    main()
