from django.apps import AppConfig


class BuatfilmConfig(AppConfig):
    name = "buatfilm"
    verbose_name = "BuatFilm"

    def ready(self):
        from dbbackup.signals import post_backup

        from buatfilm import checks  # noqa: F401  (registers the start-up checks)

        post_backup.connect(_backup_recorded, dispatch_uid="buatfilm-backup-heartbeat")


def _backup_recorded(**_kwargs):
    # Every stored backup (the daily task, or an operator's `manage.py dbbackup`) counts.
    from buatfilm.models import Heartbeat, heartbeat_record

    heartbeat_record(name=Heartbeat.Name.BACKUP)
