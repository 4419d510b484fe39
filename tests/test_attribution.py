"""Attribution models (pure): which messages earned a conversion, and how much of it."""

from datetime import UTC, datetime, timedelta

import pytest

from stripe_lifecycle.domain.attribution import (
    MODELS,
    WHOLE,
    Credit,
    Model,
    Policy,
    Touch,
    attribute,
    parse_model,
    parse_windows,
    split_amount,
    touch_range,
)
from stripe_lifecycle.settings import Settings

CONVERTED = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
SUBSECOND = timedelta(milliseconds=1)


def ago(days: float) -> datetime:
    return CONVERTED - timedelta(days=days)


# A dunning sequence: payment-failed 10 days ago (outside a 7-day window), reminder 5 days
# ago, final notice 1 day ago; the reminder was clicked 2 days ago.
SEQUENCE = [
    Touch("m-failed", ago(10)),
    Touch("m-reminder", ago(5), clicks=(ago(2),)),
    Touch("m-final", ago(1)),
]


def shares(credits: list[Credit]) -> list[tuple[str, str, int]]:
    return [(c.message_id, c.rule, c.share_bp) for c in credits]


@pytest.mark.parametrize(
    ("model", "touches", "window", "expected"),
    [
        # Default: the last click inside the window beats a later send.
        ("last_click_then_last_send", SEQUENCE, WEEK, [("m-reminder", "last_click", WHOLE)]),
        # No click: the last message sent inside the window.
        (
            "last_click_then_last_send",
            [Touch("m-a", ago(3)), Touch("m-b", ago(1))],
            WEEK,
            [("m-b", "last_send", WHOLE)],
        ),
        # The latest of two clicks wins, whichever message was sent later.
        (
            "last_click_then_last_send",
            [Touch("m-a", ago(4), clicks=(ago(0.5),)), Touch("m-b", ago(2), clicks=(ago(1),))],
            WEEK,
            [("m-a", "last_click", WHOLE)],
        ),
        # A click on a message sent before the window still counts: the click is inside.
        (
            "last_click_then_last_send",
            [Touch("m-old", ago(20), clicks=(ago(3),)), Touch("m-new", ago(1))],
            WEEK,
            [("m-old", "last_click", WHOLE)],
        ),
        # A click before the window does not; the send inside it does.
        (
            "last_click_then_last_send",
            [Touch("m-old", ago(20), clicks=(ago(9),)), Touch("m-new", ago(1))],
            WEEK,
            [("m-new", "last_send", WHOLE)],
        ),
        # Everything outside the window: unattributed.
        ("last_click_then_last_send", [Touch("m-old", ago(8))], WEEK, []),
        # After the conversion counts for nothing (sent or clicked).
        (
            "last_click_then_last_send",
            [Touch("m-later", ago(-1)), Touch("m-a", ago(30), clicks=(ago(-0.5),))],
            WEEK,
            [],
        ),
        # Never delivered (suppressed): only a click could credit it.
        ("last_click_then_last_send", [Touch("m-suppressed", None)], WEEK, []),
        ("last_click_then_last_send", [], WEEK, []),
        # The window's edges are included.
        (
            "last_click_then_last_send",
            [Touch("m-edge", ago(7))],
            WEEK,
            [("m-edge", "last_send", WHOLE)],
        ),
        (
            "last_click_then_last_send",
            [Touch("m-now", CONVERTED)],
            WEEK,
            [("m-now", "last_send", WHOLE)],
        ),
        # Stripe's `created` is whole seconds: a click or send later in the conversion's own
        # second came before the conversion (the reader paid from the link) and counts...
        (
            "last_click_then_last_send",
            [Touch("m-a", ago(3), clicks=(CONVERTED + timedelta(milliseconds=400),))],
            WEEK,
            [("m-a", "last_click", WHOLE)],
        ),
        (
            "last_click_then_last_send",
            [Touch("m-a", ago(3)), Touch("m-b", CONVERTED + timedelta(microseconds=999_999))],
            WEEK,
            [("m-b", "last_send", WHOLE)],
        ),
        (
            "linear",
            [Touch("m-a", ago(3)), Touch("m-b", ago(5), clicks=(CONVERTED + SUBSECOND,))],
            WEEK,
            [("m-b", "linear", 5000), ("m-a", "linear", 5000)],
        ),
        # ...the next second does not, nor the moment before the window's first second.
        (
            "last_click_then_last_send",
            [Touch("m-a", ago(3), clicks=(CONVERTED + timedelta(seconds=1),))],
            WEEK,
            [("m-a", "last_send", WHOLE)],
        ),
        (
            "last_click_then_last_send",
            [Touch("m-before", ago(7) - SUBSECOND)],
            WEEK,
            [],
        ),
        # First touch: the earliest message in the window (the 10-day-old one is outside).
        ("first_touch", SEQUENCE, WEEK, [("m-reminder", "first_touch", WHOLE)]),
        ("first_touch", SEQUENCE, timedelta(days=14), [("m-failed", "first_touch", WHOLE)]),
        ("first_touch", [Touch("m-old", ago(8))], WEEK, []),
        # Linear: equal shares to what touched the customer in the window, latest first.
        (
            "linear",
            SEQUENCE,
            WEEK,
            [("m-final", "linear", 5000), ("m-reminder", "linear", 5000)],
        ),
        # Shares that do not divide evenly: the odd basis point goes to the latest touch.
        (
            "linear",
            SEQUENCE,
            timedelta(days=14),
            [
                ("m-final", "linear", 3334),
                ("m-reminder", "linear", 3333),
                ("m-failed", "linear", 3333),
            ],
        ),
        # A message sent before the window but clicked inside it touched the customer.
        (
            "linear",
            [Touch("m-old", ago(20), clicks=(ago(3),)), Touch("m-new", ago(1))],
            WEEK,
            [("m-new", "linear", 5000), ("m-old", "linear", 5000)],
        ),
        ("linear", [Touch("m-old", ago(8))], WEEK, []),
    ],
)
def test_models_credit_the_messages_that_touched_the_customer_in_the_window(
    model: Model, touches: list[Touch], window: timedelta, expected: list[tuple[str, str, int]]
) -> None:
    assert shares(attribute(touches, CONVERTED, window, model)) == expected


@pytest.mark.parametrize(
    ("converted_at", "window", "expected"),
    [
        (CONVERTED, WEEK, (ago(7), CONVERTED + timedelta(seconds=1))),
        # A conversion timed finer than Stripe's second still covers its whole second.
        (
            CONVERTED + timedelta(milliseconds=250),
            timedelta(days=1),
            (ago(1), CONVERTED + timedelta(seconds=1)),
        ),
    ],
)
def test_touches_count_from_the_window_start_to_the_end_of_the_conversions_second(
    converted_at: datetime, window: timedelta, expected: tuple[datetime, datetime]
) -> None:
    assert touch_range(converted_at, window) == expected


@pytest.mark.parametrize("model", MODELS)
def test_shares_add_up_and_the_order_of_touches_does_not_matter(model: Model) -> None:
    touches = [Touch(f"m-{i}", ago(i * 0.9), clicks=(ago(i * 0.5),)) for i in range(7)]
    credits = attribute(touches, CONVERTED, WEEK, model)
    assert sum(c.share_bp for c in credits) == WHOLE
    assert attribute(list(reversed(touches)), CONVERTED, WEEK, model) == credits


def test_ties_are_broken_by_message_id_not_by_input_order() -> None:
    same_time = [Touch("m-b", ago(1)), Touch("m-a", ago(1))]
    assert shares(attribute(same_time, CONVERTED, WEEK, "last_click_then_last_send")) == [
        ("m-b", "last_send", WHOLE)
    ]
    assert shares(attribute(same_time, CONVERTED, WEEK, "first_touch")) == [
        ("m-a", "first_touch", WHOLE)
    ]


@pytest.mark.parametrize(
    ("amount", "bps", "expected"),
    [
        (4900, [WHOLE], [4900]),
        (10_000, [3334, 3333, 3333], [3334, 3333, 3333]),
        # 100 cents in three: the cent left over goes to the largest remainder.
        (100, [3334, 3333, 3333], [34, 33, 33]),
        (1, [5000, 5000], [1, 0]),
        # A negative MRR delta splits the same way, signs kept.
        (-100, [3334, 3333, 3333], [-34, -33, -33]),
        (0, [5000, 5000], [0, 0]),
        (999, [], []),
    ],
)
def test_money_splits_by_share_and_adds_up_to_the_cent(
    amount: int, bps: list[int], expected: list[int]
) -> None:
    credits = [Credit(f"m-{i}", "linear", bp) for i, bp in enumerate(bps)]
    parts = split_amount(amount, credits)
    assert parts == expected
    assert sum(parts) == (amount if bps else 0)


def test_windows_parse_per_lifecycle_and_bad_values_name_the_variable() -> None:
    assert parse_windows("") == {}
    assert parse_windows(" winback:30 , trial:14,") == {"winback": 30, "trial": 14}
    policy = Policy.build("linear", 7, "winback:30")
    assert policy.window_for("winback") == timedelta(days=30)
    assert policy.window_for("dunning") == WEEK
    for bad, says in [
        ("winback", "lifecycle:days"),
        ("churn:30", "lifecycle:days"),
        ("trial:0", "at least 1"),
        ("trial:2.5", "whole number of days"),
        ("trial:7,trial:14", "given twice"),
    ]:
        with pytest.raises(ValueError, match="LIFECYCLE_ATTRIBUTION_WINDOWS") as raised:
            parse_windows(bad)
        assert says in str(raised.value)
    assert parse_model("first_touch") == "first_touch"
    with pytest.raises(ValueError, match="LIFECYCLE_ATTRIBUTION_MODEL"):
        parse_model("position_based")


def test_settings_fail_fast_on_a_bad_model_or_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFECYCLE_ATTRIBUTION_MODEL", "linear")
    monkeypatch.setenv("LIFECYCLE_ATTRIBUTION_WINDOWS", "winback:30,trial:14")
    settings = Settings(_env_file=None)
    assert (settings.attribution_model, settings.attribution_windows) == (
        "linear",
        "winback:30,trial:14",
    )
    assert Settings(_env_file=None, attribution_model="first_touch").attribution_model == (
        "first_touch"
    )
    monkeypatch.setenv("LIFECYCLE_ATTRIBUTION_MODEL", "shapley")
    with pytest.raises(ValueError, match="LIFECYCLE_ATTRIBUTION_MODEL must be one of"):
        Settings(_env_file=None)
    monkeypatch.setenv("LIFECYCLE_ATTRIBUTION_MODEL", "linear")
    monkeypatch.setenv("LIFECYCLE_ATTRIBUTION_WINDOWS", "winback:thirty")
    with pytest.raises(ValueError, match="LIFECYCLE_ATTRIBUTION_WINDOWS entry 1"):
        Settings(_env_file=None)
