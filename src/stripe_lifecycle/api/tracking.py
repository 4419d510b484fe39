"""`GET /t/{token}`: a tracked link in an email. Records the click, then redirects to the
destination stored for that message and link; anything else is a 404."""

import logging

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import RedirectResponse

from stripe_lifecycle.links import read_token
from stripe_lifecycle.models import Message, MessageClick

from .deps import AppStateDep, SessionDep

log = logging.getLogger(__name__)
router = APIRouter(tags=["tracking"])


@router.get("/t/{token}", response_class=RedirectResponse, status_code=status.HTTP_302_FOUND)
async def follow_link(token: str, state: AppStateDep, session: SessionDep) -> RedirectResponse:
    found = read_token(state.settings.link_secret_bytes(), token)
    message = await session.get(Message, found[0]) if found else None
    destination = message.destinations.get(found[1]) if message and found else None
    if found is None or destination is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown link")
    try:
        session.add(MessageClick(message_id=found[0], link=found[1]))
        await session.commit()
    except Exception:
        # The reader came to fix a card: a lost click must not stand in their way.
        log.exception("could not record a click on message %s", found[0])
    return RedirectResponse(destination, status_code=status.HTTP_302_FOUND)
