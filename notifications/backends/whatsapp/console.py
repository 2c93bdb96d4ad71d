"""The demo backend: prints the message to stdout, like Django's console email backend."""

import sys
import threading
import uuid

_lock = threading.Lock()


def send(*, notification) -> str:
    message_id = f"console-{uuid.uuid4().hex[:12]}"
    with _lock:
        sys.stdout.write(
            f"WhatsApp to {notification.recipient} (template {notification.template}, id {message_id})\n"
            f"{'-' * 79}\n{notification.body_text.rstrip()}\n{'-' * 79}\n"
        )
        sys.stdout.flush()
    return message_id
