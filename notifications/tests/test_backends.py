"""Channel backends against local stand-ins over real sockets: how each answer is classified."""

import pytest
from django.core.mail.backends.smtp import EmailBackend

from notifications.backends import PermanentError, TransientError
from notifications.backends.email import email_send
from notifications.backends.whatsapp import fonnte, meta
from notifications.models import Notification
from notifications.tests.stubs import Reply, SmtpStub, WhatsAppStub, free_port


def _whatsapp(**overrides):
    values = {
        "pk": 7,
        "channel": "whatsapp",
        "template": "payment_received",
        "recipient": "+6281234567890",
        "body_text": "Halo Budi, pembayaran diterima.",
        "template_params": ["Budi", "BF-1", "Rp99.000", "https://x/course"],
    }
    return Notification(**(values | overrides))


def _email(recipient="budi@example.com"):
    return Notification(
        pk=8,
        channel="email",
        recipient=recipient,
        subject="Pembayaran diterima",
        body_text="Teks",
        body_html="<p>x</p>",
    )


@pytest.fixture
def meta_settings(settings):
    settings.WHATSAPP_BACKEND = "meta"
    settings.WHATSAPP_META_TOKEN = "meta-token"
    settings.WHATSAPP_META_PHONE_NUMBER_ID = "1055"
    settings.WHATSAPP_META_TEMPLATE_LANGUAGE = "id"
    settings.WHATSAPP_TIMEOUT = 2
    return settings


@pytest.fixture
def fonnte_settings(settings):
    settings.WHATSAPP_BACKEND = "fonnte"
    settings.WHATSAPP_FONNTE_TOKEN = "fonnte-token"
    settings.WHATSAPP_TIMEOUT = 2
    return settings


# --- Meta ---------------------------------------------------------------------------------------


def test_meta_sends_a_template_message_to_the_number_without_plus(meta_settings):
    with WhatsAppStub("meta") as stub:
        meta_settings.WHATSAPP_META_API_URL = stub.url + "/v21.0"
        message_id = meta.send(notification=_whatsapp())
    assert message_id == "wamid.stub1"
    request = stub.requests[0]
    assert request["path"] == "/v21.0/1055/messages" and request["auth"] == "Bearer meta-token"
    assert request["payload"] == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "6281234567890",
        "type": "template",
        "template": {
            "name": "payment_received",
            "language": {"code": "id"},
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Budi"},
                        {"type": "text", "text": "BF-1"},
                        {"type": "text", "text": "Rp99.000"},
                        {"type": "text", "text": "https://x/course"},
                    ],
                }
            ],
        },
    }


def test_meta_without_template_params_sends_text(meta_settings):
    with WhatsAppStub("meta") as stub:
        meta_settings.WHATSAPP_META_API_URL = stub.url
        meta.send(notification=_whatsapp(template_params=[]))
    assert stub.requests[0]["payload"]["text"] == {"preview_url": True, "body": "Halo Budi, pembayaran diterima."}


def _meta_error(code, status=400, message="error"):
    return Reply(status=status, body={"error": {"message": message, "type": "OAuthException", "code": code}})


@pytest.mark.parametrize(
    ("reply", "error", "retry_after"),
    [
        (Reply(status=429, body={"error": {"code": 130429}}, headers={"Retry-After": "17"}), TransientError, 17.0),
        (Reply(status=429, body={}, headers={"Retry-After": "5"}), TransientError, 5.0),
        (Reply(status=503, body={}), TransientError, None),
        (_meta_error(131000, status=500), TransientError, None),
        (_meta_error(131056), TransientError, None),
        (_meta_error(131026), PermanentError, None),
        (_meta_error(131047), PermanentError, None),
        (_meta_error(132001, message="template does not exist"), PermanentError, None),
        (_meta_error(190, status=401), PermanentError, None),
        (_meta_error(99999), PermanentError, None),  # unknown code on a 4xx: retrying cannot help
        (_meta_error(99999, status=502), TransientError, None),
        (Reply(status=200, body={"messaging_product": "whatsapp"}), TransientError, None),  # no id: unsure
    ],
)
def test_meta_classifies_errors(meta_settings, reply, error, retry_after):
    with WhatsAppStub("meta", script={"6281234567890": [reply]}) as stub:
        meta_settings.WHATSAPP_META_API_URL = stub.url
        with pytest.raises(error) as caught:
            meta.send(notification=_whatsapp())
    assert caught.value.retry_after == retry_after


def test_meta_unreachable_is_transient(meta_settings):
    meta_settings.WHATSAPP_META_API_URL = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TransientError, match="Meta unreachable"):
        meta.send(notification=_whatsapp())


def test_meta_read_timeout_is_transient(meta_settings):
    meta_settings.WHATSAPP_TIMEOUT = 0.5
    with WhatsAppStub("meta", script={"6281234567890": [Reply(block=True)]}) as stub:
        meta_settings.WHATSAPP_META_API_URL = stub.url
        with pytest.raises(TransientError, match="ReadTimeout"):
            meta.send(notification=_whatsapp())


def test_meta_without_credentials_is_permanent(meta_settings):
    meta_settings.WHATSAPP_META_TOKEN = ""
    with pytest.raises(PermanentError, match="WHATSAPP_META_TOKEN"):
        meta.send(notification=_whatsapp())


# --- Fonnte -------------------------------------------------------------------------------------


def test_fonnte_sends_text_with_country_code_and_no_rewrite(fonnte_settings):
    with WhatsAppStub("fonnte") as stub:
        fonnte_settings.WHATSAPP_FONNTE_API_URL = stub.url + "/send"
        message_id = fonnte.send(notification=_whatsapp())
    assert message_id == "1"
    request = stub.requests[0]
    assert request["auth"] == "fonnte-token" and request["path"] == "/send"
    assert request["payload"] == {
        "target": "6281234567890",
        "message": "Halo Budi, pembayaran diterima.",
        "countryCode": "0",
    }


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        # Fonnte answers failures with HTTP 200 and "status": false
        (Reply(status=200, body={"status": False, "reason": "invalid token"}), PermanentError),
        (Reply(status=200, body={"status": False, "reason": "token invalid"}), PermanentError),
        (Reply(status=200, body={"status": False, "reason": "target invalid"}), PermanentError),
        (Reply(status=200, body={"status": False, "reason": "number not registered on whatsapp"}), PermanentError),
        (Reply(status=200, body={"status": False, "reason": "target required"}), PermanentError),
        (Reply(status=200, body={"status": False, "reason": "device disconnected"}), TransientError),
        # "invalid" in it, yet only the device needs reconnecting: transient wins
        (
            Reply(
                status=200, body={"status": False, "reason": "request invalid on disconnected device", "requestid": 1}
            ),
            TransientError,
        ),
        (Reply(status=200, body={"status": False, "reason": "Device Not Connected"}), TransientError),
        (Reply(status=200, body={"status": False, "reason": "insufficient quota"}), TransientError),
        (Reply(status=200, body={"status": False, "reason": "rate limit exceeded, try again later"}), TransientError),
        (Reply(status=200, body={"status": False, "reason": "something new from Fonnte"}), TransientError),
        (Reply(status=500, body={}), TransientError),
        (Reply(status=429, body={}, headers={"Retry-After": "30"}), TransientError),
        (Reply(status=401, body={"status": False}), PermanentError),
    ],
)
def test_fonnte_classifies_errors(fonnte_settings, reply, error):
    with WhatsAppStub("fonnte", script={"6281234567890": [reply]}) as stub:
        fonnte_settings.WHATSAPP_FONNTE_API_URL = stub.url
        with pytest.raises(error):
            fonnte.send(notification=_whatsapp())


def test_fonnte_retry_after_is_kept(fonnte_settings):
    with WhatsAppStub(
        "fonnte", script={"6281234567890": [Reply(status=429, body={}, headers={"Retry-After": "30"})]}
    ) as stub:
        fonnte_settings.WHATSAPP_FONNTE_API_URL = stub.url
        with pytest.raises(TransientError) as caught:
            fonnte.send(notification=_whatsapp())
    assert caught.value.retry_after == 30.0


# --- Email over SMTP ---------------------------------------------------------------------------


@pytest.fixture
def smtp_settings(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_TIMEOUT = 2
    return settings


def test_smtp_delivers_text_and_html(smtp_settings):
    with SmtpStub() as stub:
        smtp_settings.EMAIL_PORT = stub.port
        message_id = email_send(notification=_email())
    assert stub.delivered_to("budi@example.com") == 1
    data = stub.messages[0]["data"]
    assert f"Message-ID: <{message_id}>" in data and "X-Notification-Id: 8" in data
    assert "text/plain" in data and "text/html" in data


@pytest.mark.parametrize(
    ("stub_kwargs", "error", "text"),
    [
        ({"data_script": {"budi@example.com": ["451 4.3.0 Try again later"]}}, TransientError, "SMTP 451"),
        ({"data_script": {"budi@example.com": ["554 5.7.1 Rejected as spam"]}}, PermanentError, "SMTP 554"),
        ({"rcpt_script": {"budi@example.com": ["550 5.1.1 No such user"]}}, PermanentError, "recipient refused"),
        ({"rcpt_script": {"budi@example.com": ["452 4.2.2 Mailbox full"]}}, TransientError, "recipient refused"),
    ],
)
def test_smtp_classifies_replies(smtp_settings, stub_kwargs, error, text):
    with SmtpStub(**stub_kwargs) as stub:
        smtp_settings.EMAIL_PORT = stub.port
        with pytest.raises(error, match=text):
            email_send(notification=_email())
    assert stub.delivered_to("budi@example.com") == 0


def test_smtp_server_down_is_transient(smtp_settings):
    smtp_settings.EMAIL_PORT = free_port()
    with pytest.raises(TransientError, match="SMTP unavailable"):
        email_send(notification=_email())


def test_smtp_backend_gets_the_configured_timeout(smtp_settings, monkeypatch):
    seen = {}
    original = EmailBackend.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen["timeout"] = self.timeout

    monkeypatch.setattr(EmailBackend, "__init__", spy)
    smtp_settings.EMAIL_TIMEOUT = 7
    smtp_settings.EMAIL_PORT = free_port()
    with pytest.raises(TransientError):
        email_send(notification=_email())
    assert seen == {"timeout": 7}
