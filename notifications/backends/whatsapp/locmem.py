"""The test backend: keeps sent messages in `outbox` in this process, like Django's locmem email backend."""

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class SentWhatsApp:
    to: str
    body: str
    template: str
    template_params: tuple
    message_id: str


outbox: list[SentWhatsApp] = []


def send(*, notification) -> str:
    message_id = f"locmem-{uuid.uuid4().hex[:12]}"
    outbox.append(
        SentWhatsApp(
            to=notification.recipient,
            body=notification.body_text,
            template=notification.template,
            template_params=tuple(notification.template_params or ()),
            message_id=message_id,
        )
    )
    return message_id
