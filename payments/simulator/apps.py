from django.apps import AppConfig


class MidtransSimulatorConfig(AppConfig):
    """A stateful local stand-in for Midtrans; its URLs are mounted only when MIDTRANS_SIMULATOR is on."""

    name = "payments.simulator"
    label = "midtrans_simulator"
    verbose_name = "Midtrans simulator"
    default_auto_field = "django.db.models.BigAutoField"
