"""Typed settings: one TOML file, then TIPSTREAM_* environment overrides, then secret files.

Order of precedence (last wins): defaults < TOML file < environment < secret files.
Environment keys name a setting by section and key joined with a double underscore,
e.g. ``TIPSTREAM_DATABASE__URL`` or ``TIPSTREAM_SERVER__WORKERS``.
Secrets are never read from the TOML file or the environment: only from files in
``$CREDENTIALS_DIRECTORY`` (systemd) or the configured ``secrets_dir``.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

DEFAULT_CONFIG_PATH = Path("/etc/tipstream/tipstream.toml")
ENV_PREFIX = "TIPSTREAM_"

# Secret name -> file name in the secrets directory. Missing optional secrets stay None.
SECRET_FILES = {
    "session_key": "session_key",
    "database_password": "database_password",
    "valkey_password": "valkey_password",
    "janus_api_secret": "janus_api_secret",
    "janus_admin_secret": "janus_admin_secret",
    "janus_admin_key": "janus_admin_key",
    "turn_secret": "turn_secret",
    "vault_keys": "vault_keys",
    "kyc_index_key": "kyc_index_key",
    "vault_s3_secret_key": "vault_s3_secret_key",
    "ccbill_salt": "ccbill_salt",
    "ccbill_datalink_username": "ccbill_datalink_username",
    "ccbill_datalink_password": "ccbill_datalink_password",
    "verotel_signature_key": "verotel_signature_key",
    "stripe_api_key": "stripe_api_key",
    "stripe_webhook_secret": "stripe_webhook_secret",
}
REQUIRED_SECRETS = ("session_key",)


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the setting."""


class ServerSettings(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    public_url: str = "http://127.0.0.1:8000"
    # Largest request body the app accepts; nginx is configured with the same limit.
    max_body_bytes: int = 1_048_576
    # Client addresses are taken from X-Forwarded-For only when the peer is one of these.
    trusted_proxies: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1", "::1"])


class DatabaseSettings(msgspec.Struct, forbid_unknown_fields=True):
    url: str = "postgresql://tipstream@127.0.0.1:5432/tipstream"
    pool_min: int = 2
    pool_max: int = 10


class ValkeySettings(msgspec.Struct, forbid_unknown_fields=True):
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "ts:"


class SecuritySettings(msgspec.Struct, forbid_unknown_fields=True):
    # Secure cookies need HTTPS; the one-box dev runner serves plain HTTP on loopback.
    cookie_secure: bool = True
    session_ttl_seconds: int = 7 * 24 * 3600
    min_age: int = 18
    # Per-country minimum ages (ISO 3166-1 alpha-2) where the law asks for more than min_age.
    min_age_by_country: dict[str, int] = msgspec.field(default_factory=dict)
    login_failures_per_account: int = 5
    login_failures_per_ip: int = 30
    login_failure_window_seconds: int = 900
    lockout_seconds: int = 900
    totp_issuer: str = "tipstream"


class LoggingSettings(msgspec.Struct, forbid_unknown_fields=True):
    level: str = "INFO"
    json: bool = True


class JanusSettings(msgspec.Struct, forbid_unknown_fields=True):
    # The app is Janus's only client: its WebSocket transport listens where only the app reaches.
    ws_url: str = "ws://127.0.0.1:8188"
    admin_ws_url: str = "ws://127.0.0.1:7188"
    # Janus drops a session after 60 s without traffic; keepalives go out well before that.
    keepalive_seconds: float = 20.0
    request_timeout_seconds: float = 10.0
    rtp_port_range: str = "20000-40000"
    # Public address Janus advertises when it sits behind 1:1 NAT (empty: none).
    nat_1_1_mapping: str = ""
    # Interfaces (or address prefixes) Janus gathers ICE candidates on (empty: all but loopback).
    ice_enforce_list: str = ""
    # Most publishers a room admits: the performer only.
    publishers_per_room: int = 1
    bitrate_bps: int = 2_500_000


def _default_emotes() -> dict[str, str]:
    return {
        ":heart:": "\u2764\ufe0f",
        ":fire:": "\U0001f525",
        ":clap:": "\U0001f44f",
        ":smile:": "\U0001f604",
        ":kiss:": "\U0001f618",
        ":wave:": "\U0001f44b",
    }


class RoomsSettings(msgspec.Struct, forbid_unknown_fields=True):
    chat_max_length: int = 500
    # Per user and room: at most this many messages in any chat_rate_window_seconds.
    chat_rate_messages: int = 5
    chat_rate_window_seconds: int = 10
    # Messages sent to a viewer when they join.
    chat_history: int = 50
    # Shortcodes replaced in chat text (":heart:" -> the emoji).
    emotes: dict[str, str] = msgspec.field(default_factory=_default_emotes)
    # Largest frame a client may send on the room WebSocket.
    max_frame_bytes: int = 65_536
    # Events waiting for one client; a client that falls this far behind is dropped.
    client_queue_size: int = 512
    # How long a live stream waits for its publisher to come back before it ends.
    publisher_grace_seconds: int = 60
    viewer_count_interval_seconds: float = 2.0
    # A stream shows "degraded" while Janus reported a slow link of its performer's media
    # within this many seconds (rooms/linkhealth.py).
    slowlink_window_seconds: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 30


class TurnSettings(msgspec.Struct, forbid_unknown_fields=True):
    # Given to browsers with every room join (TURN REST API: coturn use-auth-secret).
    urls: list[str] = msgspec.field(
        default_factory=lambda: ["stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp"]
    )
    credential_ttl_seconds: int = 3600
    realm: str = "tipstream"
    listening_ip: str = "127.0.0.1"
    listening_port: int = 3478
    relay_ip: str = "127.0.0.1"
    external_ip: str = ""
    min_port: int = 49152
    max_port: int = 65535


class TokenPackage(msgspec.Struct, forbid_unknown_fields=True):
    """A token bundle viewers can buy; price in the site currency as a decimal string."""

    id: str
    tokens: int
    price: str
    label: str = ""


def _default_packages() -> list[TokenPackage]:
    return [
        TokenPackage(id="tkn-100", tokens=100, price="1.00", label="100 tokens"),
        TokenPackage(id="tkn-550", tokens=550, price="5.00", label="550 tokens"),
        TokenPackage(id="tkn-1200", tokens=1200, price="10.00", label="1,200 tokens"),
        TokenPackage(id="tkn-6500", tokens=6500, price="50.00", label="6,500 tokens"),
    ]


class LedgerSettings(msgspec.Struct, forbid_unknown_fields=True):
    # The site currency and its smallest ledger unit: amounts are integers of 1/10**scale.
    # The scale must make the fee split of one token exact (checked below); it may not change
    # once money has been booked (the ledger_assets table remembers it).
    currency: str = "USD"
    currency_scale: int = 4
    # 100 tokens = 1 currency unit; platform fee in basis points (3000 = 30%). The values in
    # force are stored with every tip, so changing them never rewrites history.
    tokens_per_currency_unit: int = 100
    platform_fee_bps: int = 3000
    tip_min_tokens: int = 1
    tip_max_tokens: int = 100_000
    tip_message_max_length: int = 200
    # Per viewer, fixed one-minute windows in Valkey.
    tips_per_minute: int = 60
    # Credit sides of tips (platform revenue, token liability, burned tokens, each performer's
    # earnings) are spread over this many shard rows, so tips do not queue on one row lock.
    hot_account_shards: int = 32
    # The outbox relay leaves rows this young to the request that wrote them.
    outbox_relay_grace_seconds: int = 10
    packages: list[TokenPackage] = msgspec.field(default_factory=_default_packages)


class CcbillSettings(msgspec.Struct, forbid_unknown_fields=True):
    client_accnum: str = ""
    client_subacc: str = ""
    # The FlexForms payment flow id (Admin Portal → FlexForms).
    flex_id: str = ""
    flexforms_url: str = "https://api.ccbill.com/wap-frontflex/flexforms"
    # ISO 4217 numeric code of ledger.currency (840 = USD, 978 = EUR).
    currency_code: str = "840"
    # A single (non-recurring) price is sold for this many days (CCBill: 2 to 365).
    initial_period_days: int = 2
    # CCBill webhooks carry no signature: only these source networks are heard at all.
    webhook_networks: list[str] = msgspec.field(default_factory=list)
    # Data Link (CCBill's transaction extract) confirms the sales the webhooks announce; its
    # username and password are secrets (ccbill_datalink_username, ccbill_datalink_password).
    datalink_url: str = "https://datalink.ccbill.com/data/main.cgi"
    # Data Link reads and writes times in CCBill's own zone (Arizona: UTC-7 all year).
    datalink_utc_offset_hours: int = -7
    datalink_timeout_seconds: float = 30.0
    # Longest time span one Data Link request may cover (CCBill: one day).
    datalink_max_window_hours: int = 24
    # Each reconciliation starts this far before the end of the last good one (late records).
    reconcile_overlap_minutes: int = 60
    # A sale a webhook announced that Data Link has not confirmed after this long is flagged.
    confirm_window_hours: int = 48
    # CCBill answers one Data Link request an hour: no request goes out sooner after the last.
    datalink_min_interval_seconds: int = 3600
    # Ask Data Link at once when a webhook announces a sale (if the interval allows), rather
    # than waiting for the hourly reconciliation.
    confirm_on_webhook: bool = False


class VerotelSettings(msgspec.Struct, forbid_unknown_fields=True):
    shop_id: str = ""
    flexpay_url: str = "https://secure.verotel.com/startorder"


class StripeSettings(msgspec.Struct, forbid_unknown_fields=True):
    # Replay tolerance of webhook signatures, as the stripe library applies it.
    tolerance_seconds: int = 300
    api_base: str = "https://api.stripe.com"


class PaymentsSettings(msgspec.Struct, forbid_unknown_fields=True):
    # Processors offered at checkout: dev, ccbill, verotel, stripe.
    processors: list[str] = msgspec.field(default_factory=lambda: ["dev"])
    dev_webhook_tolerance_seconds: int = 300
    # Who bears a chargeback against tokens already tipped: the platform's reserve, or the
    # performers the tokens reached (from their earnings; the rest from the reserve).
    chargeback_policy: str = "reserve"
    # Tip earnings become payable this many days after the tip (the chargeback window).
    earnings_hold_days: int = 30
    payout_minimum: str = "50.00"
    # Payouts above this need a second admin's approval (two-person rule).
    payout_second_approval_above: str = "1000.00"
    # The platform's own account, the debtor of the SEPA credit transfers (pain.001).
    sepa_debtor_name: str = "tipstream operator"
    sepa_debtor_iban: str = "DE89370400440532013000"
    sepa_debtor_bic: str = "COBADEFFXXX"
    ccbill: CcbillSettings = msgspec.field(default_factory=CcbillSettings)
    verotel: VerotelSettings = msgspec.field(default_factory=VerotelSettings)
    stripe: StripeSettings = msgspec.field(default_factory=StripeSettings)


class VaultS3Settings(msgspec.Struct, forbid_unknown_fields=True):
    # An S3-compatible service on the operator's own hardware (MinIO, Ceph RGW, Garage, ...):
    # its URL, the existing bucket, the region it signs for, the access key id; the secret key
    # is the secret file vault_s3_secret_key. Object names get the prefix.
    endpoint: str = ""
    bucket: str = ""
    region: str = "us-east-1"
    access_key_id: str = ""
    prefix: str = ""
    # A PEM bundle of the CA that signed the endpoint's certificate (default: public CAs).
    ca_file: str = ""
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0


class VaultSettings(msgspec.Struct, forbid_unknown_fields=True):
    # Encrypted objects (KYC documents, moderation evidence) as files under dir ("local") or
    # as objects in an S3-compatible bucket ("s3", the [vault.s3] settings).
    backend: Literal["local", "s3"] = "local"
    dir: str = "/var/lib/tipstream/vault"
    s3: VaultS3Settings = msgspec.field(default_factory=VaultS3Settings)


class KycSettings(msgspec.Struct, forbid_unknown_fields=True):
    # The performer agreement / model release version a submission must accept.
    agreement_version: str = "2026-01"
    max_image_bytes: Annotated[int, msgspec.Meta(ge=1024, le=50_000_000)] = 10_000_000
    # Larger images are refused before decoding (decompression bombs).
    max_image_pixels: Annotated[int, msgspec.Meta(ge=10_000, le=200_000_000)] = 40_000_000
    # Rejected submissions are purged (crypto-shredded) this many days after the decision;
    # everything of a closed (disabled) account this many days after it closed.
    rejected_retention_days: Annotated[int, msgspec.Meta(ge=0)] = 90
    closed_account_retention_days: Annotated[int, msgspec.Meta(ge=0)] = 7 * 365


ChatPolicy = Literal["allow", "mask", "hold", "block"]
VideoAction = Literal["flag", "hide", "end"]


class ModerationSettings(msgspec.Struct, forbid_unknown_fields=True):
    """What happens to a chat message the classifier scores at or above chat_threshold: allow
    (published as is, counted), mask (its offending words starred), hold (kept for a moderator),
    block (refused). chat_policy_by_room overrides it per room (key: the performer's user id)."""

    chat_policy: ChatPolicy = "mask"
    chat_policy_by_room: dict[str, ChatPolicy] = msgspec.field(default_factory=dict)
    chat_threshold: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.8
    # This many toxic messages within the window mute the sender in the room automatically.
    offences_before_mute: Annotated[int, msgspec.Meta(ge=1)] = 3
    offence_window_seconds: Annotated[int, msgspec.Meta(ge=1)] = 600
    auto_mute_seconds: Annotated[int, msgspec.Meta(ge=1)] = 600
    # Chat lines kept as evidence with a report (the room's recent history).
    evidence_chat_lines: Annotated[int, msgspec.Meta(ge=0, le=500)] = 50
    # Load the classifier as the app starts (in a thread) rather than on the first message.
    warm_classifier: bool = True
    # The moderator worker (tipctl run moderator): one hidden subscriber per live room.
    sample_interval_seconds: Annotated[float, msgspec.Meta(ge=0.1, le=600)] = 2.0
    # NudeNet labels a room not marked adult may not show, at or above nudity_threshold, and
    # what a detection does there: flag (review queue), hide (the stream from the listings,
    # and flag) or end (the stream, and flag); nudity_action_by_room overrides it per room
    # (key: the performer's user id).
    nudity_labels: list[str] = msgspec.field(
        default_factory=lambda: [
            "FEMALE_GENITALIA_EXPOSED",
            "MALE_GENITALIA_EXPOSED",
            "FEMALE_BREAST_EXPOSED",
            "BUTTOCKS_EXPOSED",
            "ANUS_EXPOSED",
        ]
    )
    nudity_threshold: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.6
    nudity_action: VideoAction = "flag"
    nudity_action_by_room: dict[str, VideoAction] = msgspec.field(default_factory=dict)
    # Operator PDQ hash lists (docs/moderation.md): a match ends the stream (severity 5).
    hash_lists: list[str] = msgspec.field(default_factory=list)
    hash_max_distance: Annotated[int, msgspec.Meta(ge=0, le=128)] = 31
    hash_min_quality: Annotated[int, msgspec.Meta(ge=0, le=100)] = 50
    # Prometheus metrics of the moderator worker on 127.0.0.1:<port>; 0 turns them off.
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9108
    # The optional Detoxify tier (the 'detoxify' extra): a worker re-scores each published chat
    # message and applies the room's chat policy after the fact at or above detoxify_threshold
    # (the highest of detoxify_labels; empty: every label). Both paths or neither: a local
    # Detoxify checkpoint and its base model's local Hugging Face config/tokenizer directory.
    detoxify_checkpoint: str | None = None
    detoxify_config_dir: str | None = None
    detoxify_threshold: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.8
    detoxify_labels: list[str] = msgspec.field(default_factory=list)


class Secrets(msgspec.Struct):
    session_key: str | None = None
    database_password: str | None = None
    # Valkey's requirepass; used when valkey.url carries no password of its own.
    valkey_password: str | None = None
    janus_api_secret: str | None = None
    janus_admin_secret: str | None = None
    janus_admin_key: str | None = None
    turn_secret: str | None = None
    # The document vault's key-encryption keys ("<key id> <base64 key>" a line, the last one
    # active; tipctl keys init|rotate writes it) and the HMAC key of KYC document-number lookups.
    vault_keys: str | None = None
    kyc_index_key: str | None = None
    # The S3 secret access key of vault.s3.access_key_id (vault.backend = "s3").
    vault_s3_secret_key: str | None = None
    # Payment processors (payments.processors): CCBill's FlexForms salt, Verotel's FlexPay
    # signature key, Stripe's API key and webhook signing secret.
    ccbill_salt: str | None = None
    ccbill_datalink_username: str | None = None
    ccbill_datalink_password: str | None = None
    verotel_signature_key: str | None = None
    stripe_api_key: str | None = None
    stripe_webhook_secret: str | None = None


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    valkey: ValkeySettings = msgspec.field(default_factory=ValkeySettings)
    security: SecuritySettings = msgspec.field(default_factory=SecuritySettings)
    logging: LoggingSettings = msgspec.field(default_factory=LoggingSettings)
    ledger: LedgerSettings = msgspec.field(default_factory=LedgerSettings)
    payments: PaymentsSettings = msgspec.field(default_factory=PaymentsSettings)
    janus: JanusSettings = msgspec.field(default_factory=JanusSettings)
    turn: TurnSettings = msgspec.field(default_factory=TurnSettings)
    rooms: RoomsSettings = msgspec.field(default_factory=RoomsSettings)
    vault: VaultSettings = msgspec.field(default_factory=VaultSettings)
    kyc: KycSettings = msgspec.field(default_factory=KycSettings)
    moderation: ModerationSettings = msgspec.field(default_factory=ModerationSettings)
    secrets_dir: str | None = None
    secrets: Secrets = msgspec.field(default_factory=Secrets)


def _set_path(tree: dict[str, Any], dotted: list[str], value: Any) -> None:
    node = tree
    for part in dotted[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"setting {'.'.join(dotted)}: {part} is not a section")
    node[dotted[-1]] = value


def _env_value(raw: str) -> Any:
    """Environment values are TOML literals where they parse as one (ints, bools, lists)."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _read_secrets(secrets_dir: Path | None) -> dict[str, str]:
    found: dict[str, str] = {}
    dirs = [Path(d) for d in (os.environ.get("CREDENTIALS_DIRECTORY"),) if d]
    if secrets_dir is not None:
        dirs.append(secrets_dir)
    for name, file_name in SECRET_FILES.items():
        for directory in dirs:
            path = directory / file_name
            try:
                if path.is_file():
                    found[name] = path.read_text().strip()
                    break
            except PermissionError:
                # A service gets its secrets as systemd credentials; the root-only secrets_dir
                # named in the shared config is not for it to read.
                continue
    return found


def load_settings(path: Path | None = None, *, environ: dict[str, str] | None = None) -> Settings:
    """Read and validate settings; raise ConfigError naming the first bad setting."""
    env = dict(os.environ if environ is None else environ)
    if path is None:
        path = Path(env.get("TIPSTREAM_CONFIG", str(DEFAULT_CONFIG_PATH)))
    tree: dict[str, Any] = {}
    if path.exists():
        try:
            tree = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None
    elif "TIPSTREAM_CONFIG" in env or path != DEFAULT_CONFIG_PATH:
        raise ConfigError(f"config file {path}: does not exist")
    if "secrets" in tree:
        raise ConfigError(
            "setting secrets: secrets are read from files in secrets_dir, not the config"
        )

    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX) or key == "TIPSTREAM_CONFIG":
            continue
        dotted = key.removeprefix(ENV_PREFIX).lower().split("__")
        if dotted[0] == "secrets":
            raise ConfigError(f"setting {key}: secrets are read from files, not the environment")
        _set_path(tree, dotted, _env_value(raw))

    try:
        settings = msgspec.convert(tree, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(exc)) from None

    secrets_dir = Path(settings.secrets_dir) if settings.secrets_dir else None
    settings.secrets = msgspec.convert(_read_secrets(secrets_dir), Secrets)
    _check(settings)
    return settings


def _describe(exc: msgspec.ValidationError) -> str:
    message = str(exc)
    # msgspec says "... - at `$.server.port`"; lead with the setting's name.
    if " - at `$." in message:
        text, where = message.rsplit(" - at `$.", 1)
        return f"setting {where.rstrip('`')}: {text}"
    if "unknown field" in message:
        name = message.split("`")[1] if "`" in message else message
        return f"setting {name}: unknown setting"
    return f"settings: {message}"


def _check(settings: Settings) -> None:
    if not 1 <= settings.server.port <= 65535:
        raise ConfigError("setting server.port: must be between 1 and 65535")
    if settings.server.workers < 1:
        raise ConfigError("setting server.workers: must be at least 1")
    if settings.server.max_body_bytes < 1024:
        raise ConfigError("setting server.max_body_bytes: must be at least 1024")
    if not settings.database.url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("setting database.url: must be a postgresql:// URL")
    if not 1 <= settings.database.pool_min <= settings.database.pool_max:
        raise ConfigError("setting database.pool_min: must be between 1 and database.pool_max")
    if not settings.valkey.url.startswith(("redis://", "rediss://", "valkey://", "unix://")):
        raise ConfigError("setting valkey.url: must be a redis://, rediss:// or unix:// URL")
    if settings.security.min_age < 18:
        raise ConfigError("setting security.min_age: may not be below 18")
    for country, age in settings.security.min_age_by_country.items():
        if age < settings.security.min_age:
            raise ConfigError(f"setting security.min_age_by_country.{country}: below min_age")
    if settings.logging.level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError("setting logging.level: must be DEBUG, INFO, WARNING or ERROR")
    if not settings.janus.ws_url.startswith(("ws://", "wss://")):
        raise ConfigError("setting janus.ws_url: must be a ws:// or wss:// URL")
    if not 1 <= settings.janus.keepalive_seconds <= 45:
        raise ConfigError("setting janus.keepalive_seconds: must be between 1 and 45")
    if settings.turn.credential_ttl_seconds < 60:
        raise ConfigError("setting turn.credential_ttl_seconds: must be at least 60")
    if not 1 <= settings.rooms.chat_max_length <= 4000:
        raise ConfigError("setting rooms.chat_max_length: must be between 1 and 4000")
    if settings.rooms.client_queue_size < 16:
        raise ConfigError("setting rooms.client_queue_size: must be at least 16")
    for url in settings.turn.urls:
        if not url.startswith(("stun:", "turn:", "turns:")):
            raise ConfigError(f"setting turn.urls: {url!r} is not a stun:, turn: or turns: URL")
    _check_vault(settings.vault)
    _check_ledger(settings.ledger)
    _check_payments(settings.payments)
    for name in REQUIRED_SECRETS:
        value = getattr(settings.secrets, name)
        if not value:
            raise ConfigError(
                f"secret {name}: missing; put it in the file {SECRET_FILES[name]} in "
                "secrets_dir or $CREDENTIALS_DIRECTORY"
            )
        if len(value) < 32:
            raise ConfigError(f"secret {name}: too short (at least 32 characters)")


def _check_vault(vault: VaultSettings) -> None:
    if vault.backend != "s3":
        return
    if not vault.s3.endpoint.startswith(("https://", "http://")):
        raise ConfigError("setting vault.s3.endpoint: must be an http:// or https:// URL")
    for name in ("bucket", "access_key_id"):
        if not getattr(vault.s3, name):
            raise ConfigError(f"setting vault.s3.{name}: required when vault.backend is s3")


def _check_ledger(ledger: LedgerSettings) -> None:
    if not (len(ledger.currency) == 3 and ledger.currency.isascii() and ledger.currency.isupper()):
        raise ConfigError("setting ledger.currency: must be an ISO 4217 code such as USD")
    if not 0 <= ledger.currency_scale <= 8:
        raise ConfigError("setting ledger.currency_scale: must be between 0 and 8")
    if ledger.tokens_per_currency_unit < 1:
        raise ConfigError("setting ledger.tokens_per_currency_unit: must be at least 1")
    units, rest = divmod(10**ledger.currency_scale, ledger.tokens_per_currency_unit)
    if rest or units == 0:
        raise ConfigError(
            "setting ledger.currency_scale: one token must be a whole number of currency units "
            f"(10**{ledger.currency_scale} is not a multiple of {ledger.tokens_per_currency_unit})"
        )
    if not 0 <= ledger.platform_fee_bps <= 10_000:
        raise ConfigError("setting ledger.platform_fee_bps: must be between 0 and 10000")
    if units * ledger.platform_fee_bps % 10_000:
        raise ConfigError(
            "setting ledger.platform_fee_bps: the fee on one token is not a whole currency unit "
            "at this currency_scale; raise ledger.currency_scale"
        )
    if not 1 <= ledger.tip_min_tokens <= ledger.tip_max_tokens:
        raise ConfigError("setting ledger.tip_min_tokens: must be between 1 and tip_max_tokens")
    if ledger.tip_max_tokens > 10**9:
        raise ConfigError("setting ledger.tip_max_tokens: at most 1000000000")
    if not 1 <= ledger.hot_account_shards <= 256:
        raise ConfigError("setting ledger.hot_account_shards: must be between 1 and 256")
    if ledger.tips_per_minute < 1:
        raise ConfigError("setting ledger.tips_per_minute: must be at least 1")
    if not 0 <= ledger.tip_message_max_length <= 1000:
        raise ConfigError("setting ledger.tip_message_max_length: must be between 0 and 1000")
    seen: set[str] = set()
    for package in ledger.packages:
        where = f"setting ledger.packages.{package.id}"
        if package.id in seen or not package.id:
            raise ConfigError(f"{where}: package ids must be unique and non-empty")
        seen.add(package.id)
        if package.tokens < 1:
            raise ConfigError(f"{where}: tokens must be at least 1")
        try:
            price = Decimal(package.price)
        except InvalidOperation:
            raise ConfigError(f"{where}: price must be a decimal such as 9.99") from None
        scaled = price.scaleb(ledger.currency_scale)
        if not price.is_finite() or price <= 0 or scaled != scaled.to_integral_value():
            raise ConfigError(
                f"{where}: price must be positive with at most {ledger.currency_scale} decimals"
            )


def _check_payments(payments: PaymentsSettings) -> None:
    known = {"dev", "ccbill", "verotel", "stripe"}
    for name in payments.processors:
        if name not in known:
            raise ConfigError(
                f"setting payments.processors: unknown processor {name!r} "
                f"(known: {', '.join(sorted(known))})"
            )
    if payments.chargeback_policy not in ("reserve", "performer"):
        raise ConfigError("setting payments.chargeback_policy: must be reserve or performer")
    if not 0 <= payments.earnings_hold_days <= 365:
        raise ConfigError("setting payments.earnings_hold_days: must be between 0 and 365")
    for name in ("payout_minimum", "payout_second_approval_above"):
        try:
            value = Decimal(getattr(payments, name))
        except InvalidOperation:
            raise ConfigError(f"setting payments.{name}: must be a decimal such as 50.00") from None
        if not value.is_finite() or value <= 0:
            raise ConfigError(f"setting payments.{name}: must be positive")
    if not 2 <= payments.ccbill.initial_period_days <= 365:
        raise ConfigError("setting payments.ccbill.initial_period_days: must be 2 to 365")
    if not payments.ccbill.datalink_url.startswith(("https://", "http://")):
        raise ConfigError("setting payments.ccbill.datalink_url: must be an https:// URL")
    if not -12 <= payments.ccbill.datalink_utc_offset_hours <= 14:
        raise ConfigError("setting payments.ccbill.datalink_utc_offset_hours: -12 to 14")
    if not 1 <= payments.ccbill.datalink_max_window_hours <= 24:
        raise ConfigError("setting payments.ccbill.datalink_max_window_hours: 1 to 24")
    if not 1 <= payments.ccbill.confirm_window_hours <= 24 * 90:
        raise ConfigError("setting payments.ccbill.confirm_window_hours: 1 to 2160")
    if not 0 <= payments.ccbill.datalink_min_interval_seconds <= 24 * 3600:
        raise ConfigError("setting payments.ccbill.datalink_min_interval_seconds: 0 to 86400")
    if not 0 <= payments.ccbill.reconcile_overlap_minutes <= 24 * 60:
        raise ConfigError("setting payments.ccbill.reconcile_overlap_minutes: 0 to 1440")
    for network in payments.ccbill.webhook_networks:
        try:
            ipaddress.ip_network(network)
        except ValueError:
            raise ConfigError(
                f"setting payments.ccbill.webhook_networks: {network!r} is not a network"
            ) from None


def generate_secret() -> str:
    return secrets.token_urlsafe(48)
