"""The Flask factory: one call per process, everything it needs passed in as settings."""
from __future__ import annotations

import logging

from flask import Flask, g
from redis import Redis

from shared.db import Database
from shared.metrics import use_folder
from shared.queue import create_celery
from shared.settings import Settings, load_settings
from shared.storage import LocalStorage

from .actions import actions
from .api import api
from .errors import register_error_handlers
from .headers import add_security_headers
from .metrics import make_scrape_collector, metrics_page
from .origin import refuse_cross_site_writes
from .pages import pages
from .ratelimit import RateLimiter
from .watch import JobWatcher

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    use_folder(settings.prometheus_dir)
    app = Flask(__name__)
    app.config.update(
        # Uploads are parsed as a stream by web.uploads (never through request.files); this bounds the body.
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        JSON_SORT_KEYS=False,
    )
    app.extensions["pixelproof"] = Services(settings)
    app.register_blueprint(api)
    app.register_blueprint(actions)
    app.register_blueprint(pages)
    app.register_blueprint(metrics_page)
    register_error_handlers(app)
    add_security_headers(app)
    refuse_cross_site_writes(app)

    @app.teardown_appcontext
    def _close_session(_exc):  # one session per request, always returned to the pool
        session = g.pop("db_session", None)
        if session is not None:
            session.close()

    return app


class Services:
    """Per-process handles: database engine, storage, the Celery client used only to send tasks by name.

    gunicorn imports the app in each worker after fork (no --preload), so no engine or broker connection is
    ever shared between processes.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.db = Database(settings.db_url)
        self.storage = LocalStorage(settings.upload_dir)
        self.celery = create_celery(settings)
        # One client (a connection pool, connected on first use) for the web's own Redis calls: job notices,
        # /healthz and the /metrics queue depth; a client per call opened a new connection each time.
        self.redis = Redis.from_url(settings.broker_url(), socket_timeout=2, socket_connect_timeout=2)
        self.limiter = RateLimiter(settings.rate_limit_per_minute)
        self.watcher = JobWatcher(settings.broker_url(), settings.long_poll_slots, settings.long_poll_per_client)
        self.scrape_collector = make_scrape_collector(self)
