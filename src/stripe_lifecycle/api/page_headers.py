"""The security headers of every HTML page the API serves: one definition of each policy."""

from __future__ import annotations

# Our own pages (the dashboard, the pages behind an email's signed link) stand alone:
# inline CSS, no script, nothing fetched from elsewhere, forms posting back here only,
# never framed. They act for one person, so they stay out of caches too.
SELF_CONTAINED_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}

# An email preview is the customer's email, not a page of ours: no scripts, nothing
# fetched but the images (the brand logo) an email client would show.
EMAIL_PREVIEW_POLICY = "default-src 'none'; img-src https: data:; style-src 'unsafe-inline'"
