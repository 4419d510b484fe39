"""`lifecycle templates list` and `lifecycle templates render`, run as a user runs them."""

from __future__ import annotations

from pathlib import Path

from stripe_lifecycle.mail import Brand, TemplateRenderer
from stripe_lifecycle.mail.preview import SAMPLE_CUSTOMER_NAME

from . import corpus
from .cli_helpers import clean_env, run_cli

PUBLIC = "https://billing.acme.example"
FAILED = str(corpus.path("invoice.payment_failed", "clover"))


def env(**values: str) -> dict[str, str]:
    return clean_env(LIFECYCLE_PUBLIC_URL=PUBLIC, LIFECYCLE_BRAND_NAME="Acme", **values)


def test_list_prints_every_template(tmp_path: Path) -> None:
    result = run_cli("templates", "list", env=env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shipped = TemplateRenderer(Brand("Acme", None, None, "#635bff", None)).names()
    assert result.stdout.splitlines() == shipped


def test_list_includes_templates_of_the_override_folder(tmp_path: Path) -> None:
    folder = tmp_path / "overrides" / "upgrade"
    folder.mkdir(parents=True)
    for suffix, text in ((".subject.txt", "Seats"), (".html", "<p>x</p>"), (".txt", "x")):
        (folder / f"seats{suffix}").write_text(text)
    result = run_cli(
        "templates",
        "list",
        env=env(LIFECYCLE_TEMPLATES_DIR=str(tmp_path / "overrides")),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "upgrade/seats" in result.stdout.splitlines()


def test_render_all_parts_of_a_real_event(tmp_path: Path) -> None:
    result = run_cli(
        "templates",
        "render",
        "dunning/payment-failed",
        "--fixture",
        FAILED,
        env=env(),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("Subject: We couldn't process your $20.00 payment to Acme\n")
    text, _, html = out.partition("--- html ---\n")
    assert "--- text ---" in text and f"Hi {SAMPLE_CUSTOMER_NAME}," in text
    assert f"{PUBLIC}/t/preview-update_payment" in text
    assert html.startswith("<!DOCTYPE html>") and f"{PUBLIC}/t/preview-update_payment" in html
    # What was filled in is said on stderr, apart from the email.
    assert "# sample customer: the invoice.payment_failed event carries no customer" in (
        result.stderr
    )


def test_render_one_part_is_that_part_alone(tmp_path: Path) -> None:
    def part(name: str) -> str:
        result = run_cli(
            "templates",
            "render",
            "dunning/payment-failed",
            "--fixture",
            FAILED,
            "--part",
            name,
            env=env(),
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert part("subject") == "We couldn't process your $20.00 payment to Acme\n"
    html = part("html")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    text = part("text")
    assert "<" not in text and "$20.00" in text and "Subject:" not in text


def test_render_without_fixture_uses_the_bundled_sample(tmp_path: Path) -> None:
    result = run_cli(
        "templates", "render", "trial/ending", "--part", "subject", env=env(), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Your Acme trial ends on March 16, 2026\n"
    assert "bundled sample customer.subscription.created event" in result.stderr


def test_render_the_invoice_quote_and_event_templates(tmp_path: Path) -> None:
    overdue = str(corpus.path("invoice.overdue", "clover"))
    args = ("templates", "render", "invoice_overdue/reminder", "--fixture", overdue)
    result = run_cli(*args, "--part", "subject", env=env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Your $60.00 invoice from Acme is 1 day overdue\n"

    dispute = str(corpus.path("charge.dispute.created", "clover"))
    notice = ("templates", "render", "event/notice", "--fixture", dispute, "--part", "text")
    result = run_cli(*notice, env=env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "has been disputed with your bank or card issuer" in result.stdout
    assert "# sample customer" in result.stderr

    quote = run_cli(
        "templates", "render", "quote_expiring/reminder", "--part", "text", env=env(), cwd=tmp_path
    )
    assert quote.returncode == 0, quote.stderr
    assert "To accept it, reply to this email" in quote.stdout
    assert "bundled sample quote.finalized event" in quote.stderr


def test_render_with_an_automation_uses_its_offer(tmp_path: Path) -> None:
    deleted = str(corpus.path("customer.subscription.deleted", "clover"))
    args = ("templates", "render", "winback/offer", "--fixture", deleted, "--part", "text")
    sample = run_cli(*args, env=env(), cwd=tmp_path)
    assert sample.returncode == 0, sample.stderr
    assert "# sample offer" in sample.stderr
    real = run_cli(*args, "--automation", "winback-voluntary", env=env(), cwd=tmp_path)
    assert real.returncode == 0, real.stderr
    assert "Your account and data are still here" in real.stdout
    assert "# sample offer" not in real.stderr


def test_render_errors_name_what_is_wrong(tmp_path: Path) -> None:
    unknown = run_cli(
        "templates", "render", "dunning/nope", "--fixture", FAILED, env=env(), cwd=tmp_path
    )
    assert unknown.returncode != 0
    assert "no email template 'dunning/nope'" in unknown.stderr
    assert "dunning/payment-failed" in unknown.stderr and "winback/offer" in unknown.stderr

    missing = run_cli(
        "templates",
        "render",
        "dunning/reminder",
        "--fixture",
        str(tmp_path / "no.json"),
        env=env(),
        cwd=tmp_path,
    )
    assert missing.returncode != 0 and "cannot read" in missing.stderr

    charge = corpus.path("charge.succeeded", "clover")
    refused = run_cli(
        "templates", "render", "dunning/reminder", "--fixture", str(charge), env=env(), cwd=tmp_path
    )
    assert refused.returncode != 0 and "carries a charge" in refused.stderr

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    bad = run_cli(
        "templates", "render", "dunning/reminder", "--fixture", str(broken), env=env(), cwd=tmp_path
    )
    assert bad.returncode != 0 and "is not JSON" in bad.stderr

    other = run_cli(
        "templates",
        "render",
        "trial/welcome",
        "--automation",
        "winback-voluntary",
        env=env(),
        cwd=tmp_path,
    )
    assert other.returncode != 0
    assert "winback-voluntary is a winback automation" in other.stderr
    nope = run_cli(
        "templates", "render", "trial/welcome", "--automation", "nope", env=env(), cwd=tmp_path
    )
    assert nope.returncode != 0 and "known automations" in nope.stderr
