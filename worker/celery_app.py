"""Entry point for `celery -A worker.celery_app worker`: one factory call per process."""
from shared.logs import setup_logging
from shared.metrics import use_folder
from shared.queue import SWEEP_TASK, create_celery
from shared.settings import load_settings

from .routine_logs import quiet_routine_tasks
from .tasks import WorkerContext, check_model, register_tasks

settings = load_settings()
setup_logging(settings.log_level)
quiet_routine_tasks([SWEEP_TASK], settings.log_level)
use_folder(settings.prometheus_dir)
check_model(settings)
app = create_celery(settings)
register_tasks(app, WorkerContext(settings))
