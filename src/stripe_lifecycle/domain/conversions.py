"""The kinds of conversion: Stripe facts with money that a lifecycle's email can earn
(DESIGN.md, "Mail and attribution"). Stored in `conversions.kind` and read by reports."""

# A failed invoice paid during dunning.
RECOVERED = "recovered"
# A trial's first paid invoice.
TRIAL_CONVERTED = "trial_converted"
# A scheduled cancellation taken back before the period ended.
SAVED = "saved"
# A cancelled customer subscribing again (win-back).
REACTIVATED = "reactivated"
# An upgrade: more MRR from the same customer.
EXPANSION = "expansion"
# An invoice paid while reminders of its due date (or of its finalization) ran.
INVOICE_PAID = "invoice_paid"
# A quote accepted before it expired.
QUOTE_ACCEPTED = "quote_accepted"
