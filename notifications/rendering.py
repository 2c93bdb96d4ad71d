"""Rendering a message from templates/notifications/<name>/ once, at enqueue time.

Each message lives in its own directory:
  subject.txt  email subject (one line)
  email.txt    email plain-text body
  email.html   email HTML body (extends notifications/base_email.html)
  whatsapp.txt WhatsApp text (optional)

The rendered strings are stored on the outbox row, so every retry sends identical content.
"""

import re
from dataclasses import dataclass

from django.template.loader import render_to_string
from django.utils import translation

# Customer-facing text is Bahasa Indonesia whatever language a request activated.
MESSAGE_LANGUAGE = "id"


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    body_text: str
    body_html: str


def _tidy(text: str) -> str:
    # Templates are indented for readability; the message should not carry that.
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"


def email_render(*, template: str, context: dict) -> RenderedEmail:
    with translation.override(MESSAGE_LANGUAGE):
        subject = render_to_string(f"notifications/{template}/subject.txt", context)
        body_text = render_to_string(f"notifications/{template}/email.txt", context)
        body_html = render_to_string(f"notifications/{template}/email.html", context)
    return RenderedEmail(subject=" ".join(subject.split()), body_text=_tidy(body_text), body_html=body_html.strip())


def whatsapp_render(*, template: str, context: dict) -> str:
    with translation.override(MESSAGE_LANGUAGE):
        return _tidy(render_to_string(f"notifications/{template}/whatsapp.txt", context))
