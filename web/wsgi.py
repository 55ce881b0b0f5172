"""gunicorn entry point: `gunicorn web.wsgi:app`."""
from shared.logs import setup_logging
from shared.malloc import keep_freed_memory
from shared.settings import load_settings

from .app import create_app

keep_freed_memory()
settings = load_settings()
setup_logging(settings.log_level)
app = create_app(settings)
