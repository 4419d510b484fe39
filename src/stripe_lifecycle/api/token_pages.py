"""What the pages behind an email's signed link share: the cancellation survey
(`survey.py`) and the email preferences (`unsubscribe.py`).

The token in the URL is all the authentication these pages have, so each stands alone:
inline CSS, no script, nothing fetched from elsewhere, no referrer (the token goes nowhere)
and no caching. They share one frame: the brand's name above a card, and the support
address under what the card says.
"""

from __future__ import annotations

from typing import Any

from fastapi import status
from fastapi.responses import HTMLResponse
from jinja2 import DictLoader, Environment, StrictUndefined, select_autoescape

from stripe_lifecycle.api.page_headers import SELF_CONTAINED_PAGE_HEADERS

_FRAME_NAME = "token_page.html"

# A page `{% extends "token_page.html" %}` and fills `title` (after the brand's name),
# `style` (its own CSS) and `card`.
_FRAME = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex">
<title>{{ brand.name }}: {% block title %}{% endblock %}</title>
<style>
body { margin: 0; background: #f6f9fc; color: #1a1f36;
  font: 16px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, Helvetica, Arial,
  sans-serif; }
main { box-sizing: border-box; max-width: 560px; margin: 0 auto; padding: 32px 16px; }
.brand { margin: 0 0 20px; font-size: 20px; font-weight: 700; }
.card { background: #fff; border: 1px solid #e6ebf1; border-radius: 8px; padding: 24px; }
h1 { margin: 0 0 8px; font-size: 22px; line-height: 1.3; }
p { margin: 0 0 16px; }
form { margin: 0 0 16px; }
fieldset { border: 0; margin: 0 0 16px; padding: 0; }
legend { padding: 0; margin: 0 0 8px; font-weight: 600; }
.choice { display: flex; gap: 10px; margin: 0 0 8px; padding: 12px;
  border: 1px solid #e6ebf1; border-radius: 6px; cursor: pointer; }
.choice input { width: 18px; height: 18px; flex: none; }
button { width: 100%; padding: 12px 16px; border: 0; border-radius: 6px;
  background: {{ brand.primary_color }}; color: {{ brand.on_primary_color }};
  font: inherit; font-weight: 600; cursor: pointer; }
.muted { color: #697386; font-size: 14px; }
{% block style %}{% endblock %}
</style>
</head>
<body>
<main>
<p class="brand">{{ brand.name }}</p>
<div class="card">
{% block card %}{% endblock %}
{% if brand.support_email %}
<p class="muted">Questions? Write to us at
<a href="mailto:{{ brand.support_email }}">{{ brand.support_email }}</a>.</p>
{% endif %}
</div>
</main>
</body>
</html>
"""


class TokenPage:
    """One page behind a signed link: its template, which extends the shared frame."""

    def __init__(self, name: str, template: str) -> None:
        self._name = name
        self._pages = Environment(
            loader=DictLoader({_FRAME_NAME: _FRAME, name: template}),
            autoescape=select_autoescape(),
            undefined=StrictUndefined,
        )

    def respond(self, status_code: int = status.HTTP_200_OK, **context: Any) -> HTMLResponse:
        """The page rendered with `context` (which names the `brand`), uncached."""
        html = self._pages.get_template(self._name).render(**context)
        return HTMLResponse(html, status_code=status_code, headers=SELF_CONTAINED_PAGE_HEADERS)
