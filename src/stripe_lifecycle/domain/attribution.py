"""Which emails earned a conversion, and how much of it (pure: no I/O, no clock).

A conversion of a lifecycle (a recovered invoice, a converted trial, ...) is credited to
the messages of that lifecycle sent to that customer: its *touches*. A touch counts when
it happened inside the attribution window that ends at the conversion (both ends
included): the message was sent, or one of its links clicked, in it. Messages sent or
clicked after the conversion never count. Stripe times a conversion to the whole second
while touches are timed to the microsecond, so the window is read in whole seconds: a
click in the same second as the conversion (the reader paid from the link) came before
it and counts (`touch_range`).

Models (`LIFECYCLE_ATTRIBUTION_MODEL`):

- `last_click_then_last_send` (default): all of it to the last clicked message (the click
  inside the window), else to the last message sent inside the window.
- `first_touch`: all of it to the first message that touched the customer in the window.
- `linear`: equal shares to every message that touched the customer in the window.

Shares are basis points (10 000 = all of it) and always add up to exactly 10 000; money
is split with `split_amount` so the credited cents add up to exactly the conversion's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, get_args

from stripe_lifecycle.domain.automations import LIFECYCLES

Model = Literal["last_click_then_last_send", "first_touch", "linear"]
MODELS: tuple[Model, ...] = get_args(Model)
DEFAULT_MODEL: Model = "last_click_then_last_send"

# How a credit was earned; stored with the credit and (the top one) on the conversion.
Rule = Literal["last_click", "last_send", "first_touch", "linear"]

WHOLE = 10_000  # basis points

# The precision of Stripe's `created`, and so of a conversion's time.
STRIPE_TICK = timedelta(seconds=1)

# Templates of mail to the business's own team (`notify_team`), never to the customer:
# they touch nobody and earn nothing.
NOT_TOUCHES = frozenset({"team/notice"})


@dataclass(frozen=True)
class Touch:
    """One message of the lifecycle: when it went out and when its links were clicked.

    `sent_at` is None for a message that never reached the customer (suppressed, failed):
    only a click can credit it.
    """

    message_id: str
    sent_at: datetime | None
    clicks: tuple[datetime, ...] = ()


@dataclass(frozen=True)
class Credit:
    message_id: str
    rule: Rule
    share_bp: int


@dataclass(frozen=True)
class Policy:
    """The model and windows in force (from settings)."""

    model: Model = DEFAULT_MODEL
    default_window: timedelta = timedelta(days=7)
    windows: Mapping[str, timedelta] = field(default_factory=dict)

    @classmethod
    def build(cls, model: Model, window_days: int, windows: str = "") -> Policy:
        """From the settings' values: `windows` as in `LIFECYCLE_ATTRIBUTION_WINDOWS`."""
        return cls(
            model=model,
            default_window=timedelta(days=window_days),
            windows={name: timedelta(days=d) for name, d in parse_windows(windows).items()},
        )

    def window_for(self, lifecycle: str) -> timedelta:
        return self.windows.get(lifecycle, self.default_window)


def touch_range(converted_at: datetime, window: timedelta) -> tuple[datetime, datetime]:
    """[since, before): when a touch must happen to count for a conversion at `converted_at`.

    The window's seconds are whole: from `window` before the conversion's second up to the
    end of that second, the moments after `converted_at` that Stripe's `created` cut off.
    """
    second = converted_at.replace(microsecond=0)
    return second - window, second + STRIPE_TICK


def attribute(
    touches: Iterable[Touch], converted_at: datetime, window: timedelta, model: Model
) -> list[Credit]:
    """The credits of a conversion at `converted_at`, the largest (then latest) first.

    An empty list means unattributed: nothing touched the customer inside the window.
    """
    since, before = touch_range(converted_at, window)

    def inside(moment: datetime | None) -> bool:
        return moment is not None and since <= moment < before

    # (first moment inside the window, last moment inside, message id): the id breaks
    # ties so the result never depends on the order the touches came in.
    spans: list[tuple[datetime, datetime, str]] = []
    last_click: tuple[datetime, str] | None = None
    last_send: tuple[datetime, str] | None = None
    for touch in touches:
        moments = [c for c in touch.clicks if inside(c)]
        if moments:
            latest = (max(moments), touch.message_id)
            last_click = latest if last_click is None else max(last_click, latest)
        if touch.sent_at is not None and inside(touch.sent_at):
            moments.append(touch.sent_at)
            sent = (touch.sent_at, touch.message_id)
            last_send = sent if last_send is None else max(last_send, sent)
        if moments:
            spans.append((min(moments), max(moments), touch.message_id))

    if model == "last_click_then_last_send":
        if last_click is not None:
            return [Credit(last_click[1], "last_click", WHOLE)]
        if last_send is not None:
            return [Credit(last_send[1], "last_send", WHOLE)]
        return []
    if not spans:
        return []
    if model == "first_touch":
        first = min(spans)
        return [Credit(first[2], "first_touch", WHOLE)]
    # linear: the basis points that do not divide evenly go to the latest touches.
    latest_first = sorted(spans, key=lambda s: (s[1], s[2]), reverse=True)
    base, extra = divmod(WHOLE, len(latest_first))
    return [
        Credit(span[2], "linear", base + (1 if position < extra else 0))
        for position, span in enumerate(latest_first)
    ]


def split_amount(amount: int, credits: Sequence[Credit]) -> list[int]:
    """`amount` (minor units, may be negative) split by the credits' shares, in their order.

    Each part is rounded down and the cents left over go to the largest remainders (the
    earlier credit on a tie), so the parts add up to exactly `amount`.
    """
    total_bp = sum(c.share_bp for c in credits)
    if not credits or total_bp == 0:
        return [0 for _ in credits]
    sign, magnitude = (-1, -amount) if amount < 0 else (1, amount)
    parts = [divmod(magnitude * c.share_bp, total_bp) for c in credits]
    left = magnitude - sum(whole for whole, _ in parts)
    order = sorted(range(len(parts)), key=lambda i: (-parts[i][1], i))
    bonus = set(order[:left])
    return [sign * (whole + (1 if i in bonus else 0)) for i, (whole, _) in enumerate(parts)]


def parse_model(raw: str) -> Model:
    for model in MODELS:
        if raw.strip() == model:
            return model
    raise ValueError(f"LIFECYCLE_ATTRIBUTION_MODEL must be one of {', '.join(MODELS)}, not {raw!r}")


def parse_windows(raw: str) -> dict[str, int]:
    """`winback:30,trial:14` → {lifecycle: days}; the error names the variable and entry."""
    windows: dict[str, int] = {}
    for position, entry in enumerate(e.strip() for e in raw.split(",")):
        if not entry:
            continue
        lifecycle, sep, days = (part.strip() for part in entry.partition(":"))
        where = f"LIFECYCLE_ATTRIBUTION_WINDOWS entry {position + 1} ({entry!r})"
        if not sep or lifecycle not in LIFECYCLES:
            raise ValueError(
                f"{where} must be lifecycle:days with a lifecycle of {', '.join(LIFECYCLES)}"
            )
        if not days.isdigit() or int(days) < 1:
            raise ValueError(f"{where}: the window must be a whole number of days, at least 1")
        if lifecycle in windows:
            raise ValueError(f"{where}: {lifecycle} is given twice")
        windows[lifecycle] = int(days)
    return windows
