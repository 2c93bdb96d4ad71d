from django.apps import AppConfig


class MidtransSimulatorConfig(AppConfig):
    """A stateful local stand-in for Midtrans; its URLs are mounted only when MIDTRANS_SIMULATOR is on."""

    name = "payments.simulator"
    label = "midtrans_simulator"
    verbose_name = "Midtrans simulator"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.core.signals import request_started

        from payments.simulator.dispatcher import dispatcher_on_request

        # The delivery thread starts with the first request a web process serves (it checks
        # MIDTRANS_SIMULATOR then); management commands and Celery serve none, so start none.
        request_started.connect(dispatcher_on_request, dispatch_uid="midtrans_simulator_dispatcher_start")
