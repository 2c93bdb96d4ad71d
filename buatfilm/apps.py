from django.apps import AppConfig


class BuatfilmConfig(AppConfig):
    name = "buatfilm"
    verbose_name = "BuatFilm"

    def ready(self):
        from buatfilm import checks  # noqa: F401  (registers the start-up checks)
