"""What one lifecycle email contains, built in one place for the `send_email` activity and
the template preview: the step's template rendered with its context, a tracked link for
each destination and, where the mail's category allows opting out, the unsubscribe link.

The two differ only in the links' addresses: the activity signs them for the message and
the customer (`SignedLinks`); a preview points them at unsigned placeholders that the real
endpoints answer with a 404 (`PreviewLinks`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from stripe_lifecycle.domain.links import tracked_url, unsubscribe_url
from stripe_lifecycle.mail.templates import RenderedEmail, TemplateRenderer
from stripe_lifecycle.storage.models import LIFECYCLE_CATEGORIES, MailCategory


class LinkAddresses(Protocol):
    def tracked(self, link: str) -> str: ...

    def unsubscribe(self, category: str) -> str: ...


@dataclass(frozen=True)
class SignedLinks:
    """The real links: tracked per message, unsubscribe per customer and category, each
    carrying when it was issued (links expire by kind: `links.LINK_LIFETIMES`)."""

    public_url: str
    secret: bytes
    message_id: str
    customer_id: str
    issued_at: datetime

    def tracked(self, link: str) -> str:
        return tracked_url(self.public_url, self.secret, self.message_id, link, self.issued_at)

    def unsubscribe(self, category: str) -> str:
        return unsubscribe_url(
            self.public_url, self.secret, self.customer_id, category, self.issued_at
        )


@dataclass(frozen=True)
class PreviewLinks:
    """`{public_url}/t/preview-<link>` and `{public_url}/u/preview`: no signature."""

    public_url: str

    def tracked(self, link: str) -> str:
        return f"{self.public_url.rstrip('/')}/t/preview-{link}"

    def unsubscribe(self, category: str) -> str:  # noqa: ARG002 (one page for every category)
        return f"{self.public_url.rstrip('/')}/u/preview"


def mail_category(lifecycle: str) -> str:
    """What a customer opts out of to stop this lifecycle's mail (unknown: product mail)."""
    return LIFECYCLE_CATEGORIES.get(lifecycle, MailCategory.PRODUCT)


def unsubscribable(category: str, unsubscribe_billing: bool) -> bool:
    """Whether mail of `category` can be unsubscribed from: billing mail only with
    LIFECYCLE_UNSUBSCRIBE_BILLING."""
    return category != MailCategory.BILLING or unsubscribe_billing


@dataclass(frozen=True)
class EmailLinks:
    # None where the mail's category cannot be unsubscribed from.
    unsubscribe: str | None
    # Link name -> its tracked URL, one per destination.
    tracked: dict[str, str]

    def for_template(self) -> dict[str, str | None]:
        """The links as templates see them: `links` in their context."""
        return {"unsubscribe": self.unsubscribe, **self.tracked}


@dataclass(frozen=True)
class ComposedEmail:
    category: str
    links: EmailLinks
    rendered: RenderedEmail


def compose_email(
    renderer: TemplateRenderer,
    template: str,
    lifecycle: str,
    context: Mapping[str, Any],
    destinations: Iterable[str],
    addresses: LinkAddresses,
    *,
    unsubscribe_billing: bool,
) -> ComposedEmail:
    """`template` rendered with `context` and its links. Raises what the renderer raises
    (TemplateNotFound, jinja2's UndefinedError, ValueError)."""
    category = mail_category(lifecycle)
    links = EmailLinks(
        unsubscribe=(
            addresses.unsubscribe(category)
            if unsubscribable(category, unsubscribe_billing)
            else None
        ),
        tracked={name: addresses.tracked(name) for name in destinations},
    )
    rendered = renderer.render(template, {**context, "links": links.for_template()})
    return ComposedEmail(category, links, rendered)
