"""Configuration from `LIFECYCLE_*` environment variables, validated once at start-up."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stripe_lifecycle.domain.attribution import DEFAULT_MODEL as DEFAULT_ATTRIBUTION_MODEL
from stripe_lifecycle.domain.attribution import Model as AttributionModel
from stripe_lifecycle.domain.attribution import parse_model as parse_attribution_model
from stripe_lifecycle.domain.attribution import parse_windows as parse_attribution_windows
from stripe_lifecycle.domain.automations import parse_duration
from stripe_lifecycle.domain.outbound import parse_hosts
from stripe_lifecycle.domain.send_windows import parse_window
from stripe_lifecycle.payload_codec import EncryptionCodec, build_codec, parse_key

ApiRole = Literal["support", "admin"]
API_ROLES: tuple[ApiRole, ...] = ("support", "admin")


class ConfigurationError(ValueError):
    """A setting that cannot work, found when it is used; the message names the variable."""


# A configured key given as its SHA-256 (`role:sha256:<64 hex digits>`) rather than itself.
HASHED_KEY_PREFIX = "sha256:"
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")

# How long a mail provider is waited for per request, unless LIFECYCLE_MAIL_TIMEOUT says.
MAIL_TIMEOUT_SECONDS = 30.0

# The shortest secrets accepted. The link secret signs every email link and the dashboard's
# session cookies (which hold a role): `secrets.token_urlsafe(32)` makes 43 characters. API
# keys are compared as SHA-256 digests without a slow hash, so only their length and
# randomness stand between a guesser and the key.
LINK_SECRET_MIN_LENGTH = 32
API_KEY_MIN_LENGTH = 24
# A generated secret of that length has far more different characters than this; a typed
# pattern (`aaaa...`, `abcabc...`, `1234...`) has fewer.
_MIN_DISTINCT_CHARACTERS = 10
# Words that mark a value copied from an example rather than generated.
_PLACEHOLDER_WORDS = ("changeme", "replaceme", "placeholder", "yoursecret", "yourkey", "example")


def weak_secret(value: str, min_length: int) -> str | None:
    """Why a secret is too weak to accept, or None; never quotes the secret itself."""
    if len(value) < min_length:
        return f"is {len(value)} characters long; at least {min_length} are required"
    if len(set(value)) < _MIN_DISTINCT_CHARACTERS:
        return f"has fewer than {_MIN_DISTINCT_CHARACTERS} different characters"
    letters = re.sub(r"[^a-z]", "", value.lower())
    if any(word in letters for word in _PLACEHOLDER_WORDS):
        return "looks like a placeholder from an example"
    return None


def key_digest(key: str) -> bytes:
    """The SHA-256 of an API key: what is kept and compared, whichever form configured it.
    A plain hash is enough for keys (long random strings, not passwords people choose)."""
    return hashlib.sha256(key.encode()).digest()


def hashed_key(key: str) -> str:
    """The `sha256:<hex>` form of a key for LIFECYCLE_API_KEYS (`lifecycle keys hash`)."""
    return HASHED_KEY_PREFIX + key_digest(key).hex()


@dataclass(frozen=True)
class ApiKey:
    """A configured key, kept only as its SHA-256 digest (given plain or already hashed)."""

    role: ApiRole
    digest: bytes = field(repr=False)

    @property
    def fingerprint(self) -> str:
        # The first 8 hex digits of the digest: the same as `key_fingerprint` of the key.
        return self.digest.hex()[:8]

    def matches_digest(self, presented: bytes) -> bool:
        # Constant-time, so response timing does not leak how much of a digest was right.
        return hmac.compare_digest(self.digest, presented)

    def matches(self, presented: str) -> bool:
        return self.matches_digest(key_digest(presented))


class Settings(BaseSettings):
    """Every setting of the API, the worker and `lifecycle dev`."""

    # An empty `LIFECYCLE_X=` line (common in .env files) means "not set", not "empty".
    # Errors never echo the value: several settings are secrets (keys, webhook URLs).
    model_config = SettingsConfigDict(
        env_prefix="LIFECYCLE_",
        env_file=".env",
        extra="ignore",
        env_ignore_empty=True,
        hide_input_in_errors=True,
    )

    database_url: str = "sqlite+aiosqlite:///./data/lifecycle.db"
    data_dir: Path = Path("./data")

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "stripe-lifecycle"
    temporal_port: int = Field(default=7233, ge=1, le=65535)
    ui_port: int = Field(default=8233, ge=1, le=65535)
    # The Temporal Web UI people open: customer lookups link to it, and it is the one browser
    # origin the /dashboard/codec endpoints answer. Default: the dev server's UI
    # (LIFECYCLE_UI_PORT).
    temporal_ui_url: str | None = None

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_keys: SecretStr = SecretStr("")
    public_url: str = "http://localhost:8000"
    # The billing page of your own app: where "update your card" and offer links lead when
    # Stripe cannot make a Customer Portal session (no API key, Stripe unreachable).
    billing_url: str | None = None
    # Signs tracked links (/t/...). `lifecycle dev` makes one in the data dir if unset.
    link_secret: SecretStr | None = None

    stripe_webhook_secret: SecretStr | None = None
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1)
    stripe_api_key: SecretStr | None = None
    # Stripe's API base; set only to point at a stand-in (tests, a proxy).
    stripe_api_base: str | None = None
    # How often the `stripe-reconcile` Schedule reads back Stripe's events (`1h`, `30m`),
    # and how far back each pass looks: Stripe keeps events for 30 days.
    reconcile_interval: timedelta = timedelta(hours=1)
    reconcile_lookback: timedelta = timedelta(days=3)
    # Stripe list reads a second (sync and reconciliation pages), for every worker at once.
    # Stripe allows 25 reads a second in test mode and 100 in live mode, shared with the
    # workers' other reads (coupons, prices) and the API's portal sessions.
    stripe_read_rate: float = Field(default=20.0, gt=0)
    # Where `notify_team` actions send their notice: an address, and/or a Slack
    # incoming-webhook URL (a secret: it is the only credential the post needs).
    team_email: str | None = None
    team_slack_webhook: SecretStr | None = None

    # `webhook` steps: signed with this secret, and sent only to these hosts
    # (comma-separated `host` or `host:port`; none while empty).
    outbound_webhook_secret: SecretStr | None = None
    outbound_webhook_hosts: str = ""

    mail_transport: Literal["outbox", "postmark", "smtp"] = "outbox"
    mail_from: str = "billing@example.com"
    # Seconds a mail provider (Postmark's API, the SMTP server) is waited for per request;
    # below the send activity's two minutes, so a provider that hangs ends the attempt
    # with its own error (retried, or `unknown` when the message may have gone out).
    mail_timeout: float = Field(default=MAIL_TIMEOUT_SECONDS, gt=0, lt=120)
    postmark_server_token: SecretStr | None = None
    # Postmark's API base; set only to point at a stand-in (tests, a proxy). postmarker
    # joins "/email" to it, so a path prefix here is dropped.
    postmark_api_url: str | None = None
    # Postmark message streams: transactional mail (billing, product) and marketing mail
    # (win-back, upgrade campaigns).
    postmark_message_stream: str = "outbound"
    postmark_broadcast_stream: str = "broadcast"
    # HTTP basic auth of POST /webhooks/postmark (set the same in Postmark's webhook
    # settings); the endpoint refuses every call while either is unset.
    postmark_webhook_user: str | None = None
    postmark_webhook_password: SecretStr | None = None
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    # Implicit TLS from the first byte (SMTPS, usually port 465), instead of STARTTLS.
    smtp_tls: bool = False
    # Test-mode events (livemode false) only mail these domains; others are suppressed.
    test_mode_allowed_domains: str = "example.com"

    brand_name: str = "Your product"
    brand_logo_url: str | None = None
    brand_support_email: str | None = None
    brand_primary_color: str = "#635bff"
    brand_address: str | None = None

    # Billing mail (dunning, payment action, expiring card, renewal) keeps going to
    # customers who unsubscribed unless this is true.
    unsubscribe_billing: bool = False
    # At most this many marketing emails per customer in any window of this many hours.
    marketing_cap: int = Field(default=1, ge=1)
    marketing_cap_hours: float = Field(default=24.0, gt=0)

    # A conversion is credited to a message clicked (else sent) this many days before it.
    attribution_window_days: int = Field(default=7, ge=1)
    # How credit is shared between a lifecycle's messages (see attribution.py).
    attribution_model: AttributionModel = DEFAULT_ATTRIBUTION_MODEL
    # Per-lifecycle windows, `winback:30,trial:14`; the others use attribution_window_days.
    attribution_windows: str = ""

    # Local hours customers may be mailed when an automation sets no `send_window`:
    # `08:00-20:00`, or `any`. Their zone: Stripe `timezone` metadata, else their billing
    # country's, else default_timezone.
    send_window: str = "any"
    default_timezone: str = "UTC"

    automations: Path = Path("automations.yaml")
    # Segments (`segments.yaml`; the packaged defaults while it is absent), and how often
    # the `segments-sweep` Schedule re-evaluates conditions that turn with time alone.
    segments: Path = Path("segments.yaml")
    segment_sweep_interval: timedelta = timedelta(hours=1)
    templates_dir: Path | None = None
    # Put customers' emails in the `CustomerEmail` search attribute. Temporal stores and
    # indexes search attributes in clear text (no codec reaches them); customers are found
    # by email from the database (`GET /v1/customers?email=`, `lifecycle customers find`).
    index_email: bool = False

    # Encrypts every Temporal payload (AES-256-GCM): 32 random bytes as 64 hex digits or
    # base64. Old keys (comma-separated) still decrypt what they encrypted, for rotation.
    payload_key: SecretStr | None = None
    payload_old_keys: SecretStr | None = None

    # Request bodies over this many bytes are answered 413 before they are read whole
    # (Stripe's events are a few KB; its documented ceiling is far below 1 MiB).
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)

    forwarder_lanes: int = Field(default=64, ge=1, le=1024)
    forwarder_sweep_seconds: float = Field(default=5.0, gt=0)
    forwarder_max_backoff_seconds: float = Field(default=30.0, gt=0)

    worker_max_cached_workflows: int = Field(default=1000, ge=0)
    # Workflow tasks are CPU-bound Python run on a thread pool of this size: more threads
    # than cores only adds GIL contention.
    worker_max_concurrent_workflow_tasks: int = Field(default=8, ge=1)
    worker_max_concurrent_activities: int = Field(default=100, ge=1)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "LIFECYCLE_DATABASE_URL must be an async SQLAlchemy URL: "
                "sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db"
            )
        return value

    @field_validator("reconcile_interval", mode="before")
    @classmethod
    def _interval(cls, value: object) -> object:
        return _duration("LIFECYCLE_RECONCILE_INTERVAL", value)

    @field_validator("segment_sweep_interval", mode="before")
    @classmethod
    def _sweep_interval(cls, value: object) -> object:
        return _duration("LIFECYCLE_SEGMENT_SWEEP_INTERVAL", value)

    @field_validator("reconcile_lookback", mode="before")
    @classmethod
    def _lookback(cls, value: object) -> object:
        lookback = _duration("LIFECYCLE_RECONCILE_LOOKBACK", value)
        if isinstance(lookback, timedelta) and lookback > STRIPE_EVENT_RETENTION:
            raise ValueError(
                "LIFECYCLE_RECONCILE_LOOKBACK can be at most 30d: Stripe keeps events for 30 days"
            )
        return lookback

    @field_validator("api_keys")
    @classmethod
    def _role_key_pairs(cls, value: SecretStr) -> SecretStr:
        parse_api_keys(value.get_secret_value())
        return value

    @field_validator("link_secret")
    @classmethod
    def _strong_link_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # The dashboard's session key derives from it: a guessable one forges admin sessions.
        if value is not None and (
            weak := weak_secret(value.get_secret_value(), LINK_SECRET_MIN_LENGTH)
        ):
            raise ValueError(
                f"LIFECYCLE_LINK_SECRET {weak}: use a long random string, e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return value

    @field_validator("attribution_model", mode="before")
    @classmethod
    def _known_attribution_model(cls, value: object) -> AttributionModel:
        return parse_attribution_model(str(value))

    @field_validator("attribution_windows")
    @classmethod
    def _lifecycle_day_pairs(cls, value: str) -> str:
        parse_attribution_windows(value)
        return value

    @field_validator("send_window")
    @classmethod
    def _window(cls, value: str) -> str:
        parse_window(value)
        return value

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Berlin)") from exc
        return value

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("LIFECYCLE_PUBLIC_URL must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("temporal_ui_url")
    @classmethod
    def _http_ui_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("LIFECYCLE_TEMPORAL_UI_URL must start with http:// or https://")
        return None if value is None else value.rstrip("/")

    @field_validator("billing_url")
    @classmethod
    def _http_billing_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("LIFECYCLE_BILLING_URL must start with http:// or https://")
        return value

    @field_validator("team_slack_webhook")
    @classmethod
    def _http_slack_url(cls, value: SecretStr | None) -> SecretStr | None:
        # The URL is the credential: the error never echoes it.
        if value is not None and not value.get_secret_value().startswith(("http://", "https://")):
            raise ValueError(
                "LIFECYCLE_TEAM_SLACK_WEBHOOK must be a Slack incoming-webhook URL "
                "(https://hooks.slack.com/services/...)"
            )
        return value

    @field_validator("outbound_webhook_hosts")
    @classmethod
    def _webhook_hosts(cls, value: str) -> str:
        parse_hosts(value)
        return value

    @field_validator("outbound_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("LIFECYCLE_OUTBOUND_WEBHOOK_SECRET cannot be blank")
        return value

    @field_validator("payload_key")
    @classmethod
    def _payload_key(cls, value: SecretStr | None) -> SecretStr | None:
        # At start, naming the variable, rather than at the first payload.
        if value is not None:
            parse_key(value.get_secret_value(), "LIFECYCLE_PAYLOAD_KEY")
        return value

    @field_validator("payload_old_keys")
    @classmethod
    def _payload_old_keys(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None:
            # Absent from info.data when the current key failed its own check (reported there).
            has_key = "payload_key" not in info.data or info.data["payload_key"] is not None
            build_codec(VALID_KEY_STAND_IN if has_key else None, value.get_secret_value())
        return value

    @field_validator("postmark_webhook_user")
    @classmethod
    def _basic_auth_user(cls, value: str | None) -> str | None:
        if value is not None and ":" in value:
            raise ValueError("LIFECYCLE_POSTMARK_WEBHOOK_USER cannot contain ':' (HTTP basic auth)")
        return value

    def link_secret_bytes(self) -> bytes:
        if self.link_secret is None or not self.link_secret.get_secret_value():
            raise ConfigurationError(
                "LIFECYCLE_LINK_SECRET is required to sign tracked links "
                "(a long random string, the same for every API and worker process)"
            )
        return self.link_secret.get_secret_value().encode()

    def test_mode_domains(self) -> frozenset[str]:
        return frozenset(
            d.strip().lower() for d in self.test_mode_allowed_domains.split(",") if d.strip()
        )

    def local_public_url(self) -> bool:
        """Whether LIFECYCLE_PUBLIC_URL is this machine (development, not a deployment)."""
        return urlsplit(self.public_url).hostname in ("localhost", "127.0.0.1", "::1")

    def outbound_hosts(self) -> frozenset[str]:
        """The hosts `webhook` steps may POST to (LIFECYCLE_OUTBOUND_WEBHOOK_HOSTS)."""
        return parse_hosts(self.outbound_webhook_hosts)

    def payload_codec(self) -> EncryptionCodec | None:
        """The codec of LIFECYCLE_PAYLOAD_KEY; None while it is unset (payloads in clear)."""
        return build_codec(
            None if self.payload_key is None else self.payload_key.get_secret_value(),
            None if self.payload_old_keys is None else self.payload_old_keys.get_secret_value(),
        )

    def temporal_ui(self) -> str:
        return self.temporal_ui_url or f"http://localhost:{self.ui_port}"

    def temporal_ui_origin(self) -> str:
        """The UI's origin (scheme, host, port), as a browser sends it in `Origin`."""
        parts = urlsplit(self.temporal_ui())
        return f"{parts.scheme}://{parts.netloc}"

    def temporal_ui_link(self, workflow_id: str) -> str:
        namespace = quote(self.temporal_namespace, safe="")
        return (
            f"{self.temporal_ui()}/namespaces/{namespace}/workflows/{quote(workflow_id, safe='')}"
        )

    def parsed_api_keys(self) -> list[ApiKey]:
        return parse_api_keys(self.api_keys.get_secret_value())


def parse_api_keys(raw: str) -> list[ApiKey]:
    """Parse `role:key,role:sha256:<hex>`; the error names the variable and never echoes a
    key. A key written `sha256:` and 64 hex digits is the SHA-256 of the key callers send."""
    keys: list[ApiKey] = []
    for position, pair in enumerate(p.strip() for p in raw.split(",")):
        if not pair:
            continue
        role, sep, key = pair.partition(":")
        if not sep or not key:
            raise ValueError(
                f"LIFECYCLE_API_KEYS entry {position + 1} must be role:key "
                f"(roles: {', '.join(API_ROLES)})"
            )
        if role not in API_ROLES:
            raise ValueError(
                f"LIFECYCLE_API_KEYS entry {position + 1} has unknown role {role!r} "
                f"(roles: {', '.join(API_ROLES)})"
            )
        if key.startswith(HASHED_KEY_PREFIX):
            hex_digest = key.removeprefix(HASHED_KEY_PREFIX)
            if not _SHA256_HEX.fullmatch(hex_digest):
                raise ValueError(
                    f"LIFECYCLE_API_KEYS entry {position + 1}: sha256: must be followed by "
                    "the 64 hex digits of the key's SHA-256 (`lifecycle keys hash` prints them)"
                )
            digest = bytes.fromhex(hex_digest)
        else:
            if weak := weak_secret(key, API_KEY_MIN_LENGTH):
                raise ValueError(
                    f"LIFECYCLE_API_KEYS entry {position + 1}: the key {weak} (a long random "
                    "string, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
                )
            digest = key_digest(key)
        keys.append(ApiKey(role=role, digest=digest))
    return keys


STRIPE_EVENT_RETENTION = timedelta(days=30)
# Checks LIFECYCLE_PAYLOAD_OLD_KEYS on its own: 32 zero bytes in hex, never used to encrypt.
VALID_KEY_STAND_IN = "00" * 32


def _duration(name: str, value: object) -> object:
    """`1h`, `3d`, ... as a timedelta of at least a second; a timedelta passes as it is."""
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
    else:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from exc
    if seconds < 1:
        raise ValueError(f"{name} must be at least 1s")
    return timedelta(seconds=seconds)


@lru_cache
def get_settings() -> Settings:
    return Settings()
