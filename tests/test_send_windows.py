"""Send windows: the pure rules, the automation field, and mail held to the customer's
morning on the time-skipping server."""

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from temporalio.api.enums.v1 import EventType

from stripe_lifecycle.domain.automations import (
    Automation,
    AutomationsError,
    Step,
    parse_automations,
)
from stripe_lifecycle.domain.events import InvoiceInfo
from stripe_lifecycle.domain.send_windows import SendWindow, next_send_time, parse_window, zone_for
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.workflows.engine import LifecycleInput, LifecycleResult, LifecycleUpdate
from stripe_lifecycle.workflows.lifecycles import DunningWorkflow, TrialWorkflow

from .conftest import WorkerRig
from .delivery_helpers import SUBSCRIPTION
from .workflow_helpers import DAY, email_offsets, eventually

BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = [0, 1, 2, 3, 4]


def local(text: str, zone: ZoneInfo = BERLIN) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("08:00-20:00", SendWindow(480, 1200)),
        ("22:00-02:00", SendWindow(1320, 120)),
        ({"start": "09:30", "end": "17:00", "days": ["fri", "mon"]}, SendWindow(570, 1020, [0, 4])),
        ("any", None),
    ],
)
def test_windows_parse(value: object, expected: SendWindow | None) -> None:
    assert parse_window(value) == expected


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("8-20", "bad time of day"),
        ("08:00", "use 08:00-20:00"),
        ("25:00-26:00", "bad time of day"),
        ("09:00-09:00", "different from its end"),
        ({"start": "09:00", "end": "17:00", "days": ["someday"]}, "days must be"),
        ({"start": "09:00", "end": "17:00", "hours": 3}, "unknown send window field 'hours'"),
        (42, "bad send window"),
    ],
)
def test_bad_windows_are_refused_with_the_reason(value: object, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_window(value)


@pytest.mark.parametrize(
    ("due", "window", "expected"),
    [
        # Inside: goes now.
        ("2026-11-23T10:15", SendWindow(480, 1200), "2026-11-23T10:15"),
        # 3 a.m.: held to 8 a.m. the same day.
        ("2026-11-23T03:00", SendWindow(480, 1200), "2026-11-23T08:00"),
        # 21:00: held to 8 a.m. the next day.
        ("2026-11-23T21:00", SendWindow(480, 1200), "2026-11-24T08:00"),
        # The end is exclusive.
        ("2026-11-23T20:00", SendWindow(480, 1200), "2026-11-24T08:00"),
        # Friday evening, weekdays only: Monday morning.
        ("2026-11-27T19:00", SendWindow(540, 1080, WEEKDAYS), "2026-11-30T09:00"),
        # Saturday noon, weekdays only: Monday morning.
        ("2026-11-28T12:00", SendWindow(540, 1080, WEEKDAYS), "2026-11-30T09:00"),
        # Across midnight: 01:00 belongs to the window opened the evening before.
        ("2026-11-24T01:00", SendWindow(1320, 120), "2026-11-24T01:00"),
        ("2026-11-24T03:00", SendWindow(1320, 120), "2026-11-24T22:00"),
        # Daylight saving ends in Berlin on 2026-10-25: the opening is local 08:00.
        ("2026-10-25T04:00", SendWindow(480, 1200), "2026-10-25T08:00"),
    ],
)
def test_next_send_time_in_the_customers_zone(due: str, window: SendWindow, expected: str) -> None:
    at = next_send_time(local(due).astimezone(UTC), window, BERLIN)
    assert at.tzinfo == UTC
    assert at.astimezone(BERLIN) == local(expected)


@pytest.mark.parametrize(
    ("timezone", "country", "default", "zone"),
    [
        ("America/Denver", "DE", "UTC", "America/Denver"),
        (None, "de", "UTC", "Europe/Berlin"),
        ("Not/AZone", "JP", "UTC", "Asia/Tokyo"),
        (None, "ZZ", "Europe/London", "Europe/London"),
        (None, None, "UTC", "UTC"),
    ],
)
def test_zone_is_the_customers_then_their_countrys_then_the_default(
    timezone: str | None, country: str | None, default: str, zone: str
) -> None:
    assert zone_for(timezone, country, default) == ZoneInfo(zone)


def test_automation_send_window_field_is_validated_with_file_and_field() -> None:
    text = """
automations:
  - name: trial-office-hours
    lifecycle: trial
    send_window: {start: "09:00", end: "17:00", days: [mon, tue, wed, thu, fri]}
    steps: [{after: 0s, send: trial/welcome}]
  - name: trial-any
    lifecycle: trial
    send_window: any
    steps: [{after: 0s, send: trial/welcome}]
"""
    office, any_time = parse_automations(text, "automations.yaml", {"trial/welcome"})
    assert office.send_window == SendWindow(540, 1020, WEEKDAYS)
    assert (any_time.send_window, any_time.any_time) == (None, True)
    broken = text.replace('end: "17:00"', 'end: "5pm"')
    with pytest.raises(AutomationsError) as raised:
        parse_automations(broken, "automations.yaml", {"trial/welcome"})
    assert raised.value.problems == [
        "automations.yaml: automation 'trial-office-hours': send_window: "
        "bad time of day '5pm' (use HH:MM, e.g. 08:00)"
    ]


def test_the_default_window_setting_is_validated() -> None:
    assert Settings(send_window="08:00-20:00").send_window == "08:00-20:00"
    with pytest.raises(ValueError, match="send window"):
        Settings(send_window="mornings")
    with pytest.raises(ValueError, match="IANA time zone"):
        Settings(default_timezone="Mars/Olympus")


def hours_into_day(at: datetime, zone: ZoneInfo) -> float:
    moment = at.astimezone(zone)
    return moment.hour + moment.minute / 60


async def test_mail_due_in_the_customers_night_waits_for_their_morning(
    skipping_rig: WorkerRig,
) -> None:
    """A trial starting in Tokyo's night: the welcome waits for 09:00 there; the
    reminder computed for the night is held the same way."""
    # The test server's clock, which the workflow's timers run on.
    now = int((await skipping_rig.env.get_current_time()).timestamp())
    tokyo = ZoneInfo("Asia/Tokyo")
    window = SendWindow(540, 1020)
    # Start the trial so that it begins outside 09:00-17:00 in Tokyo.
    start_hour = hours_into_day(datetime.fromtimestamp(now, UTC), tokyo)
    trial_end = now + 10 * DAY
    automation = Automation(
        name="trial-office-hours",
        lifecycle="trial",
        steps=[
            Step(index=0, after_seconds=0, send="trial/welcome"),
            Step(index=1, before_seconds=3 * DAY, send="trial/ending"),
        ],
        send_window=window,
    )
    sub = f"sub_{uuid.uuid4().hex[:12]}"
    async with skipping_rig.worker():
        handle = await skipping_rig.env.client.start_workflow(
            TrialWorkflow.run,
            LifecycleInput(
                customer_id="cus_Tokyo",
                automation=automation,
                subject_id=sub,
                subscription_id=sub,
                anchor=trial_end,
                customer_email="ada@example.com",
                context={
                    "subscription": {
                        **SUBSCRIPTION,
                        "current_period_end": trial_end,
                        "trial_end": trial_end,
                    },
                    "payment_method": None,
                },
                customer_country="JP",
            ),
            id=f"trial-{sub}",
            task_queue=skipping_rig.task_queue,
        )
        await handle.result()
    history = await handle.fetch_history()
    started = history.events[0].event_time.ToDatetime().replace(tzinfo=UTC)
    sends = [
        e.event_time.ToDatetime().replace(tzinfo=UTC)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "send_email"
    ]
    assert len(sends) == 2
    for sent in sends:
        assert 9 <= hours_into_day(sent, tokyo) < 17, sent.astimezone(tokyo)
    reminder_due = datetime.fromtimestamp(trial_end - 3 * DAY, UTC)
    # Scheduled within the workflow task that follows the timer.
    second = timedelta(seconds=1)
    assert abs(sends[0] - next_send_time(started, window, tokyo)) < second
    assert abs(sends[1] - next_send_time(reminder_due, window, tokyo)) < second
    if not 9 <= start_hour < 17:
        assert sends[0] > started  # held, not sent at once


async def test_a_payment_while_the_mail_waits_for_the_window_sends_nothing(
    skipping_rig: WorkerRig,
) -> None:
    """Dunning's first email held to the morning; the invoice is paid before: no mail, and
    the step says why."""
    invoice_id = f"in_{uuid.uuid4().hex[:14]}"
    # A window that is closed now in UTC whatever the hour: it opens in two hours.
    opens = (datetime.now(UTC) + timedelta(hours=2)).replace(second=0, microsecond=0)
    minute = opens.hour * 60 + opens.minute
    window = SendWindow(minute, (minute + 60) % 1440)
    automation = Automation(
        name="dunning-windowed",
        lifecycle="dunning",
        steps=[Step(index=0, after_seconds=0, send="dunning/payment-failed")],
        send_window=window,
    )
    async with skipping_rig.worker():
        handle = await skipping_rig.env.client.start_workflow(
            DunningWorkflow.run,
            LifecycleInput(
                customer_id="cus_Dun1",
                invoice=InvoiceInfo(
                    id=invoice_id, customer_id="cus_Dun1", currency="usd", amount_due=4900
                ),
                automation=automation,
                customer_email="ada@example.com",
                customer_timezone="UTC",
            ),
            id=f"dunning-{invoice_id}",
            task_queue=skipping_rig.task_queue,
        )

        # Once it has asked when it may send (and waits for the window), pay.
        async def holding() -> bool:
            history = await handle.fetch_history()
            return any(e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED for e in history.events)

        await eventually(holding, "the send window hold")
        await handle.signal(
            DunningWorkflow.lifecycle_update,
            LifecycleUpdate(event_id="evt_paid", created=0, outcome="recovered"),
        )
        result: LifecycleResult = await handle.result()
        state = await handle.query(DunningWorkflow.state)
    assert result.outcome == "recovered"
    assert await email_offsets(handle) == []
    assert [s.status for s in state.steps_done] == [
        "not sent: ended while waiting for its send window"
    ]
    assert await skipping_rig.messages(handle.id) == []
